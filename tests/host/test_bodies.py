"""Real-process tests: bounded bodies both ways, body size and stall limits, the idle timeout."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from serving import Served, make_project

from edgecli.deno import deno_binary

SLOW_READER = """
import asyncio, hashlib
from starlette.responses import JSONResponse

async def handler(req):
    if req.query_params.get("big"):
        from starlette.responses import Response
        return Response(b"z" * (int(req.query_params["big"]) << 20))
    await asyncio.sleep(1)  # not reading yet: the upload must wait, not pile up in memory
    digest, size = hashlib.sha256(), 0
    async for chunk in req.stream():
        digest.update(chunk)
        size += len(chunk)
        if size % (8 << 20) < len(chunk):
            await asyncio.sleep(0.01)
    return JSONResponse({"size": size, "sha256": digest.hexdigest()})
"""

SLOW_START = """
import asyncio, os
from starlette.responses import PlainTextResponse

async def handler(req):
    await req.body()
    await asyncio.sleep(float(req.query_params.get("sleep", "0")))
    return PlainTextResponse(str(os.getpid()))
"""

CONFIG = """
[edge_runtime]
policy = "per_worker"

[functions.reader]
max_body_mb = 0  # off: the upload below is 200 MB

[functions.small]
max_body_mb = 1
request_idle_timeout_sec = 1
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path, {"reader": SLOW_READER, "small": SLOW_START}, CONFIG)


@pytest.mark.timeout(180)
def test_a_200_mb_upload_to_a_slow_reader_succeeds_under_the_default_memory_limit(project: Path) -> None:
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()

    def upload() -> Iterator[bytes]:
        for _ in range(200):
            digest.update(block)
            yield block

    with Served(project) as srv:
        r = srv.post("reader", content=upload(), timeout=150)
        assert r.status_code == 200, r.text
        assert r.json() == {"size": 200 << 20, "sha256": digest.hexdigest()}
        big = srv.get("reader", params={"big": "50"}, timeout=60)
        assert big.status_code == 200 and big.content == b"z" * (50 << 20)
        # No worker was killed for memory (a loaded machine may retire one for its wall clock meanwhile).
        assert not srv.events(kind="shutdown", reason="memory")


@pytest.mark.timeout(60)
def test_a_body_over_max_body_mb_is_refused_before_it_is_read(project: Path) -> None:
    with Served(project) as srv:
        r = srv.post("small", content=b"x" * (2 << 20))
        assert r.status_code == 413 and r.headers["sb-error-code"] == "PAYLOAD_TOO_LARGE"
        assert r.json()["code"] == "PAYLOAD_TOO_LARGE" and "max_body_mb" in r.json()["message"]

        def chunks() -> Iterator[bytes]:  # no content-length: found out while it streams
            for _ in range(4):
                yield b"x" * (512 << 10)

        r = srv.post("small", content=chunks())
        assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"
        assert srv.post("small", content=b"x" * 1000).status_code == 200  # within the limit


@pytest.mark.timeout(60)
def test_idle_timeout_answers_504_and_keeps_the_worker(project: Path) -> None:
    with Served(project) as srv:
        pid = srv.get("small").text
        r = srv.get("small", params={"sleep": "5"})
        assert r.status_code == 504 and r.headers["sb-error-code"] == "IDLE_TIMEOUT"
        assert r.json()["code"] == "IDLE_TIMEOUT"
        assert srv.get("small").text == pid  # its worker was not killed for it
        record = srv.wait_event(kind="request", status=504)
        assert record["function"] == "small"


@pytest.mark.timeout(60)
def test_a_stalled_body_is_bounded_and_serve_stays_up(project: Path) -> None:
    with Served(project) as srv:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(
                b"POST /functions/v1/small HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789"
            )
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"sb-error-code: REQUEST_TIMEOUT" in answer
        assert srv.get("small").status_code == 200


TS_DIGEST = """
Deno.serve(async (req: Request) => {
  const body = new Uint8Array(await req.arrayBuffer());
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
  const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  return new Response(JSON.stringify({ size: body.length, sha256: hex, path: new URL(req.url).pathname }));
});
"""


@pytest.mark.timeout(90)
@pytest.mark.skipif(deno_binary() is None, reason="Deno is not installed (edgecli[deno])")
def test_a_typescript_function_takes_part_in_the_flow_control(tmp_path: Path) -> None:
    body = os.urandom(5 << 20)  # ten windows' worth: the Deno worker must grant credit as it reads
    project = make_project(tmp_path, {}, CONFIG)
    ts = project / "supabase" / "functions" / "digest" / "index.ts"
    ts.parent.mkdir(parents=True)
    ts.write_text(TS_DIGEST)
    with Served(project) as srv:
        r = srv.post("digest", "/a", content=body, timeout=60)
        assert r.status_code == 200, r.text
        digest = hashlib.sha256(body).hexdigest()
        assert r.json() == {"size": len(body), "sha256": digest, "path": "/digest/a"}
        r = srv.post("digest", content=b"x" * 1000, headers={"expect": "100-continue"}, timeout=30)
        assert r.status_code == 200 and r.json()["size"] == 1000


TS_STREAM = """
Deno.serve((req: Request) => {
  const left = { mb: Number(new URL(req.url).searchParams.get("mb") ?? "0") };
  const block = new Uint8Array(1 << 20).fill(122);
  // Pulled as fast as the worker takes chunks: only flow control keeps it from running ahead.
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (left.mb-- > 0) controller.enqueue(block);
      else controller.close();
    },
  });
  return new Response(body, { headers: { "x-pid": String(Deno.pid) } });
});
"""


def rss_mb(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / (1 << 20)


@pytest.mark.timeout(180)
@pytest.mark.skipif(deno_binary() is None, reason="Deno is not installed (edgecli[deno])")
def test_a_large_typescript_response_to_a_slow_client_holds_only_the_window(tmp_path: Path) -> None:
    project = make_project(tmp_path, {}, CONFIG)
    ts = project / "supabase" / "functions" / "stream" / "index.ts"
    ts.parent.mkdir(parents=True)
    ts.write_text(TS_STREAM)
    with Served(project) as srv:
        first = srv.get("stream", params={"mb": "1"}, timeout=120)  # boots (and type-checks) the worker
        assert first.status_code == 200 and len(first.content) == 1 << 20
        worker = int(first.headers["x-pid"])
        assert srv.proc is not None
        serve = srv.proc.pid
        base = {pid: rss_mb(pid) for pid in (serve, worker)}
        peak = dict(base)
        size = 0
        with srv.client.stream("GET", srv.url("stream"), params={"mb": "200"}, timeout=60) as r:
            assert r.status_code == 200 and r.headers["x-pid"] == str(worker)
            started = time.monotonic()
            for chunk in r.iter_raw(1 << 16):
                assert chunk.count(b"z") == len(chunk)
                size += len(chunk)
                if size % (4 << 20) < len(chunk):
                    peak = {pid: max(peak[pid], rss_mb(pid)) for pid in peak}
                # About 25 MB/s: far slower than the worker makes the body, which must wait for it.
                time.sleep(max(0.0, started + size / (25 << 20) - time.monotonic()))
        assert size == 200 << 20
        grown = {pid: round(peak[pid] - base[pid]) for pid in peak}
        # A window is 512 KB; without flow control most of the 200 MB piled up in serve. The worker's
        # share is garbage: V8 collects array buffers once some 64 MB of them are unreferenced.
        assert grown[serve] < 60 and grown[worker] < 120, grown
