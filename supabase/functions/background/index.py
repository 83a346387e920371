"""Background work: answer at once, finish the job afterwards with EdgeRuntime.wait_until.

The handler replies 202 straight away; the job runs on in the background and logs each step. It also
listens for `beforeunload` (the worker is about to go away) and `unhandledrejection` (a background task
raised: send {"fail": true} to see it).

Try it (--wait follows the background task until it settles and prints its logs):
    edgecli invoke background --data '{"steps": 3}' --wait
"""

import asyncio
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse

from edgecli import EdgeRuntime, serve

STEP_SECONDS = 0.5
unfinished: set[str] = set()  # jobs still running in this worker


async def run_job(job: str, steps: int, fail: bool) -> None:
    unfinished.add(job)
    try:
        for step in range(1, steps + 1):
            await asyncio.sleep(STEP_SECONDS)  # stands in for real work: an API call, a database write
            print(f"job {job}: step {step}/{steps} done")
        if fail:
            raise RuntimeError(f"job {job} failed on purpose")
        print(f"job {job}: finished")
    finally:
        unfinished.discard(job)


async def handler(req: Request) -> JSONResponse:
    try:
        body = await req.json()
    except ValueError:  # no body: use the defaults
        body = {}
    if not isinstance(body, dict):
        body = {}
    steps = body.get("steps", 3)
    if not isinstance(steps, int) or not 1 <= steps <= 20:
        return JSONResponse({"error": "steps must be a whole number from 1 to 20"}, status_code=400)
    job = uuid.uuid4().hex[:8]
    # Not awaited: the response goes out now, the job carries on in the background.
    EdgeRuntime.wait_until(run_job(job, steps, fail=body.get("fail") is True))
    return JSONResponse({"job": job, "status": "accepted", "steps": steps}, status_code=202)


@EdgeRuntime.on("beforeunload")
def on_beforeunload(ev) -> None:
    # The worker is going away (reason: wall_clock, cpu, memory, early_drop or termination): a last chance
    # to save progress or hand unfinished jobs over to a queue.
    print(f"worker shutting down ({ev.detail['reason']}); unfinished jobs: {sorted(unfinished) or 'none'}")


@EdgeRuntime.on("unhandledrejection")
def on_unhandledrejection(ev) -> None:
    print(f"background task failed: {ev.reason!r}")
    # Handled here: without this the error is logged with its traceback and the worker is retired.
    ev.prevent_default()


serve(handler)
