"""Real-process tests: stock Supabase TypeScript functions served by Deno workers beside Python ones."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest
from serving import Served, make_project, wait_until

from edgecli.deno import deno_binary

pytestmark = [
    pytest.mark.skipif(deno_binary() is None, reason="Deno is not installed (edgecli[deno])"),
    pytest.mark.timeout(180),  # a first type check in an empty cache takes seconds (test_deno_boot.py)
]

# The shape of Supabase's own background-task example.
SEED = """
async function asyncLongRunningTask(ms: number) {
  await new Promise((resolve) => setTimeout(resolve, ms));
  console.log("long task done");
}

addEventListener("beforeunload", (ev: any) => {
  console.log("Function will be shutdown due to", ev.detail?.reason);
});

EdgeRuntime.waitUntil(asyncLongRunningTask(10));

Deno.serve(async (req: Request) => {
  const { name } = req.method === "POST" ? await req.json() : { name: "GET" };
  EdgeRuntime.waitUntil(asyncLongRunningTask(Number(new URL(req.url).searchParams.get("ms") ?? "200")));
  console.log("hello from", new URL(req.url).pathname);
  return new Response(JSON.stringify({ message: `Hello ${name}!` }), {
    headers: {
      "Content-Type": "application/json",
      "x-runtime": "deno",
      "x-supabase-url": Deno.env.get("SUPABASE_URL") ?? "",
    },
  });
});
"""

PYTHON_HELLO = """
from starlette.responses import JSONResponse
from edgecli import serve

async def handler(req):
    return JSONResponse({"runtime": "python"})

serve(handler)
"""


def config(policy: str = "per_worker", extra: str = "") -> str:
    # A worker type-checks new code before it imports it, which takes TypeScript seconds on a busy
    # machine: the first request waits for that longer than serve's default lets it.
    runtime = f'[edge_runtime]\npolicy = "{policy}"\ngraceful_exit_timeout_sec = 5\n{PATIENT}{extra}'
    return f"[api]\nport = 54321\n\n{runtime}"


PATIENT = "request_wait_timeout_ms = 120000\n"


def project(tmp_path: Path, files: dict[str, str], policy: str = "per_worker", extra: str = "") -> Path:
    root = make_project(tmp_path, {}, config(policy, extra))
    for relative, text in files.items():
        write(root, relative, text)
    return root


def write(root: Path, relative: str, text: str) -> None:
    path = root / "supabase" / "functions" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.parent / f".{path.name}.staged"
    staged.write_text(textwrap.dedent(text))
    os.replace(staged, path)  # atomic, as editors save: the watcher never sees a half-written file


def test_a_stock_supabase_function_serves_beside_a_python_one(tmp_path: Path) -> None:
    root = project(tmp_path, {"seed/index.ts": SEED, "py/index.py": PYTHON_HELLO})
    with Served(root) as srv:
        r = srv.post("seed", "/sub", json={"name": "Ada"})
        assert r.status_code == 200, r.text
        assert r.json() == {"message": "Hello Ada!"}
        assert r.headers["x-runtime"] == "deno" and r.headers["x-request-id"]
        assert r.headers["x-supabase-url"] == srv.base_url  # the environment Python functions get
        assert srv.get("py").json() == {"runtime": "python"}
        request = r.headers["x-request-id"]
        line = srv.wait_event(kind="log", message="hello from /seed/sub")
        assert line["request"] == request and line["function"] == "seed"
        end = srv.wait_event(lambda e: e["request"] == request, kind="task_end")
        assert end["status"] == "completed" and end["name"].startswith("waitUntil@index.ts:")
        module_level = srv.wait_event(lambda e: e["request"] is None, kind="task_end")
        assert module_level["status"] == "completed"
        assert srv.wait_event(kind="request", request=request)["status"] == 200
        srv.stop()
        unload = srv.wait_event(kind="beforeunload", function="seed")
        assert unload["reason"] == "termination"
        srv.wait_event(kind="log", message="Function will be shutdown due to termination")


HEADERS = """
Deno.serve((req: Request) => Response.json({ url: req.url, headers: [...req.headers] }));
"""


def test_request_headers_reach_the_function_as_sent_repeats_joined(tmp_path: Path) -> None:
    with Served(project(tmp_path, {"headers/index.ts": HEADERS})) as srv:
        sent = [("x-one", "1"), ("X-Two", "a b"), ("x-two", "c"), ("apikey", "k" * 200)]
        r = srv.get("headers", "/p", params={"q": "1"}, headers=sent)
        assert r.status_code == 200, r.text
        assert r.json()["url"] == f"http://127.0.0.1:{srv.port}/headers/p?q=1"
        got = dict(r.json()["headers"])
        assert got["x-one"] == "1" and got["x-two"] == "a b, c" and got["apikey"] == "k" * 200
        assert got["host"] == f"127.0.0.1:{srv.port}"


def test_oneshot_cuts_the_task_off_and_says_so(tmp_path: Path) -> None:
    with Served(project(tmp_path, {"seed/index.ts": SEED}, policy="oneshot")) as srv:
        r = srv.post("seed", json={"name": "x"}, params={"ms": "3000"})
        assert r.status_code == 200
        request = r.headers["x-request-id"]
        end = srv.wait_event(lambda e: e["request"] == request, kind="task_end")
        assert end["status"] == "cancelled" and end["reason"] == "termination"
        srv.wait_event(lambda e: "cut off" in e["message"] and "per_worker" in e["message"], kind="log")
        srv.wait_event(kind="log", message="Function will be shutdown due to termination")


STREAMING = """
export default {
  async fetch(req: Request): Promise<Response> {
    const body = new ReadableStream({
      async start(controller) {
        for (const part of ["one ", "two ", "three"]) {
          controller.enqueue(new TextEncoder().encode(part));
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        controller.close();
      },
    });
    return new Response(body, { status: 201, headers: { "content-type": "text/plain" } });
  },
};
"""

ECHO = """
Deno.serve(async (req: Request) => new Response(await req.arrayBuffer()));
"""


def test_export_default_fetch_streams_and_request_bodies_arrive_whole(tmp_path: Path) -> None:
    root = project(tmp_path, {"stream/index.ts": STREAMING, "echo/index.ts": ECHO})
    with Served(root) as srv:
        r = srv.get("stream")
        assert (r.status_code, r.text) == (201, "one two three")
        payload = os.urandom(3 * 1024 * 1024)
        assert srv.post("echo", content=payload).content == payload


FAILING = """
addEventListener("unhandledrejection", (ev: any) => {
  console.log("listener saw:", ev.reason?.message);
  ev.preventDefault();
});

Deno.serve((req: Request) => {
  const url = new URL(req.url);
  if (url.pathname.endsWith("/task")) {
    EdgeRuntime.waitUntil(Promise.reject(new Error("task broke")));
    return new Response("ok");
  }
  throw new Error("handler broke");
});
"""


def test_errors_are_500s_and_rejections_reach_the_listener(tmp_path: Path) -> None:
    with Served(project(tmp_path, {"fail/index.ts": FAILING})) as srv:
        r = srv.get("fail")
        assert r.status_code == 500 and r.json()["code"] == "WORKER_ERROR"
        logged = srv.wait_event(lambda e: "handler broke" in e["message"], kind="log", level="error")
        assert logged["request"] == r.headers["x-request-id"]
        # The author's frames, not the worker's dispatch below them (edgecli/runtime/deno/*.ts).
        assert "fail/index.ts:" in logged["message"] and "runtime/deno/" not in logged["message"], logged
        assert srv.get("fail", "/task").status_code == 200
        srv.wait_event(kind="log", message="listener saw: task broke")
        end = srv.wait_event(kind="task_end")
        assert end["status"] == "failed" and end["error"].startswith("Error: task broke\n"), end
        assert "fail/index.ts:" in end["error"] and "runtime/deno/" not in end["error"], end
        assert srv.get("fail", "/task").status_code == 200  # prevented: the worker keeps serving


def test_a_syntax_error_is_a_boot_error_until_the_file_is_fixed(tmp_path: Path) -> None:
    root = project(tmp_path, {"ts/index.ts": "Deno.serve((req: Request) => { return new Response('x' ;\n"})
    with Served(root) as srv:
        r = srv.get("ts")
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "BOOT_ERROR"
        srv.wait_event(kind="boot_error", function="ts")
        write(root, "ts/index.ts", "Deno.serve(() => new Response('fixed'));\n")
        wait_until(lambda: srv.get("ts").text == "fixed", 20, what="the fixed function to serve")


def test_the_function_folder_deno_json_import_map_is_honoured(tmp_path: Path) -> None:
    files = {
        "mapped/deno.json": '{"imports": {"greeting": "./lib/greeting.ts"}}',
        "mapped/lib/greeting.ts": "export const greeting = (name: string) => `hi ${name}`;\n",
        "mapped/index.ts": (
            'import { greeting } from "greeting";\nDeno.serve(() => new Response(greeting("map")));\n'
        ),
    }
    with Served(project(tmp_path, files)) as srv:
        assert srv.get("mapped").text == "hi map"


HOG = """
Deno.serve((req: Request) => {
  const what = new URL(req.url).searchParams.get("do");
  if (what === "spin") {
    const end = Date.now() + 5000;
    while (Date.now() < end) {}
  } else if (what === "eat") {
    const hold: Uint8Array[] = [];
    for (let i = 0; i < 400; i++) hold.push(new Uint8Array(1024 * 1024).fill(1));
    return new Response(String(hold.length));
  }
  return new Response("fine");
});
"""


@pytest.mark.parametrize(
    ("limits", "what", "reason"),
    [
        ("cpu_time_soft_limit_ms = 300\ncpu_time_hard_limit_ms = 600", "spin", "cpu"),
        ("memory_limit_mb = 150", "eat", "memory"),
    ],
)
def test_limits_kill_a_deno_worker_with_546(tmp_path: Path, limits: str, what: str, reason: str) -> None:
    with Served(project(tmp_path, {"hog/index.ts": HOG}, extra=limits)) as srv:
        r = srv.get("hog", params={"do": what})
        assert r.status_code == 546, r.text
        assert r.json()["code"] == "WORKER_LIMIT" and reason in r.json()["message"].lower()
        shutdown = srv.wait_event(kind="shutdown", function="hog")
        assert shutdown["reason"] == reason
        assert srv.get("hog").text == "fine"  # a fresh worker serves the next request


WALL = """
addEventListener("beforeunload", (ev: any) => console.log("unload", ev.detail.reason));

Deno.serve((req: Request) => {
  EdgeRuntime.waitUntil(new Promise((resolve) => setTimeout(resolve, 60_000)));
  return new Response("started");
});
"""


def test_the_wall_clock_limit_warns_then_cuts_the_task_off(tmp_path: Path) -> None:
    extra = "wall_clock_limit_sec = 2\n"
    with Served(project(tmp_path, {"wall/index.ts": WALL}, extra=extra)) as srv:
        r = srv.get("wall")
        assert r.text == "started"
        srv.wait_event(kind="log", message="unload wall_clock", timeout=10)
        end = srv.wait_event(kind="task_end", request=r.headers["x-request-id"], timeout=10)
        assert end["status"] == "cancelled" and end["reason"] == "wall_clock"
        srv.wait_event(kind="shutdown", reason="wall_clock", function="wall")


def test_no_deno_worker_outlives_a_killed_serve(tmp_path: Path) -> None:
    with Served(project(tmp_path, {"seed/index.ts": SEED})) as srv:
        assert srv.post("seed", json={"name": "x"}).status_code == 200
        assert any("deno" in " ".join(p.cmdline()) for p in srv.family())
        srv.stop(signal.SIGKILL)  # asserts that the fork server and every worker are gone


TAGGED = """
async function report(label: string) {
  await new Promise((resolve) => setTimeout(resolve, 20));
  console.log(`in ${label}`);
  await Promise.resolve();
  console.info(`still in ${label}`);
}

EdgeRuntime.waitUntil(report("module task"));

Deno.serve(async (req: Request) => {
  EdgeRuntime.waitUntil(report("first task"));
  console.log("in the handler");
  EdgeRuntime.waitUntil(report("second task"));
  await new Promise((resolve) => setTimeout(resolve, 50));
  console.warn("in the handler, later");
  return new Response("ok");
});
"""


def test_console_in_a_background_task_carries_the_task_id(tmp_path: Path) -> None:
    with Served(project(tmp_path, {"tagged/index.ts": TAGGED})) as srv:
        r = srv.get("tagged")
        assert r.text == "ok"
        request = r.headers["x-request-id"]
        for line in ("in the handler", "in the handler, later"):
            record = srv.wait_event(kind="log", message=line)
            assert (record["request"], record["task"]) == (request, None), record
        for label in ("first task", "second task", "module task"):
            start = srv.wait_event(
                kind="task_start", task=srv.wait_event(kind="log", message=f"in {label}")["task"]
            )
            assert start["request"] == (None if label == "module task" else request)
            later = srv.wait_event(kind="log", message=f"still in {label}")
            assert later["task"] == start["task"] and later["request"] == start["request"]
        tasks = {e["task"] for e in srv.events(kind="task_start")}
        assert len(tasks) == 3 and None not in tasks
