# The apps below are source text, kept as a function author would write it.
# ruff: noqa: E501
"""The apps the differential tests serve both ways: each is a function's index.py (it defines `app`).

`star` is a Starlette app, `fast` a FastAPI app, `raw` a bare ASGI callable. They report what they saw
(scope, receive() messages, disconnects) so that the same request to bare uvicorn and to `edgecli serve`
can be compared on what the app observed as well as on the response.
"""

from __future__ import annotations

STAR = r"""
import asyncio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute

SEEN = {}

async def info(request):
    return JSONResponse({
        "url": str(request.url),
        "base_url": str(request.base_url),
        "url_for": str(request.url_for("info")),
        "path_params": request.path_params,
        "query": list(request.query_params.multi_items()),
    })

async def plain(request):
    return PlainTextResponse("plain text\n", headers={"x-app": "star"})

async def redirect(request):
    return RedirectResponse(request.url_for("info"))

async def wait(request):
    key = request.query_params["key"]
    SEEN[key] = "started"
    for _ in range(200):
        if await request.is_disconnected():
            SEEN[key] = "disconnected"
            break
        await asyncio.sleep(0.05)
    return PlainTextResponse("done")

async def sse(request):
    key = request.query_params.get("key", "")
    async def events():
        SEEN[key] = "started"
        try:
            i = 0
            while True:
                yield f"data: {i}\n\n"
                i += 1
                await asyncio.sleep(0.02)
        finally:
            SEEN[key] = "cancelled"
    return StreamingResponse(events(), media_type="text/event-stream")

async def seen(request):
    return JSONResponse({"state": SEEN.get(request.query_params["key"])})

def remember(key):
    SEEN[key] = "background ran"

async def background(request):
    key = request.query_params["key"]
    return PlainTextResponse("later", background=BackgroundTask(remember, key))

async def echo(ws):
    await ws.accept()
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "bye":
            await ws.close(4000, "see you")
            return
        if message.get("text") is not None:
            await ws.send_text("echo " + message["text"])
        else:
            await ws.send_bytes(b"echo " + message["bytes"])

app = Starlette(routes=[
    Route("/star/info/{rest:path}", info, name="info"),
    Route("/star/plain", plain, methods=["GET", "HEAD"]),
    Route("/star/redirect", redirect),
    Route("/star/wait", wait),
    Route("/star/sse", sse),
    Route("/star/seen", seen),
    Route("/star/background", background),
    WebSocketRoute("/star/ws", echo),
])
"""

FAST = r"""
from fastapi import BackgroundTasks, FastAPI, Request

app = FastAPI(docs_url="/fast/docs", openapi_url="/fast/openapi.json")
DONE = []

@app.get("/fast/items/{item_id}")
async def item(item_id: int, q: str = "") -> dict:
    return {"item_id": item_id, "q": q}

@app.post("/fast/echo")
async def echo(request: Request) -> dict:
    return {"json": await request.json(), "url": str(request.url)}

@app.get("/fast/later")
async def later(tasks: BackgroundTasks) -> dict:
    tasks.add_task(DONE.append, 1)
    return {"queued": True}
"""

RAW = r"""
import asyncio, hashlib, json

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        if scope["path"].endswith("/refuse"):
            await receive()
            await send({"type": "websocket.close", "code": 1000})
            return
        await receive()
        await send({"type": "websocket.accept", "subprotocol": (scope["subprotocols"] or [None])[0]})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
    route = scope["path"][len(scope["root_path"]):].split("/")[2]
    await ROUTES[route](scope, receive, send)

async def read_all(receive):
    messages, body = [], bytearray()
    while True:
        message = await receive()
        messages.append({k: v for k, v in message.items() if k != "body"})
        body += message.get("body", b"")
        if message["type"] != "http.request" or not message.get("more_body"):
            return messages, bytes(body)

async def respond(send, status, body, headers=()):
    await send({"type": "http.response.start", "status": status, "headers": list(headers)})
    await send({"type": "http.response.body", "body": body})

async def scope_view(scope, receive, send):
    messages, body = await read_all(receive)
    seen = {
        "type": scope["type"], "asgi": scope["asgi"], "http_version": scope["http_version"],
        "method": scope["method"], "scheme": scope["scheme"], "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"), "root_path": scope["root_path"],
        "query_string": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "client_host": scope["client"][0], "server": "%s:%d" % tuple(scope["server"]),
        "last_message": messages[-1], "body_sha": hashlib.sha256(body).hexdigest(), "body_len": len(body),
    }
    await respond(send, 200, json.dumps(seen).encode(), [(b"content-type", b"application/json")])

async def upload(scope, receive, send):
    _, body = await read_all(receive)
    await respond(send, 200, json.dumps({"size": len(body), "sha": hashlib.sha256(body).hexdigest()}).encode())

async def cookies(scope, receive, send):
    headers = [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2; Path=/"), (b"x-dup", b"1"), (b"x-dup", b"2")]
    await respond(send, 201, b"cookies", headers)

async def big(scope, receive, send):
    await respond(send, 200, bytes(range(256)) * (5 * 4096), [(b"content-type", b"application/octet-stream")])

async def chunks(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for i in range(4):
        await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
        await asyncio.sleep(0.3)
    await send({"type": "http.response.body", "body": b""})

async def nothing(scope, receive, send):
    await respond(send, 204, b"")

ROUTES = {"scope": scope_view, "upload": upload, "cookies": cookies, "big": big, "chunks": chunks, "nothing": nothing}
"""

# WebSocket floods (test_websocket_flood.py): one side sends far more than the other takes for a while.
# `/flood/app`: the client floods while the app does not read until `GET /flood/go`, then it reads all
# and answers with what it got. `/flood/client?n=N`: the app sends N numbered 64 KB messages as fast as
# its sends return while the client does not read; `GET /flood/state` says how many it has sent so far.
FLOOD = r"""
import asyncio, hashlib, json

STATE = {"sent": 0, "go": None}

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    route = scope["path"].rsplit("/", 1)[-1]
    if scope["type"] == "http":
        if route == "go":
            STATE["go"].set()
        body = json.dumps({"sent": STATE["sent"]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()
    await send({"type": "websocket.accept"})
    if route == "app":
        STATE["go"] = asyncio.Event()
        await STATE["go"].wait()
        count, digest = 0, hashlib.sha256()
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "end":
                await send({"type": "websocket.send", "text": f"{count} {digest.hexdigest()}"})
                continue
            digest.update(message.get("bytes") or message.get("text", "").encode())
            count += 1
    STATE["sent"] = 0
    n = int(scope["query_string"].decode().partition("=")[2])
    for i in range(n):
        await send({"type": "websocket.send", "bytes": i.to_bytes(4, "big") * 16384})
        STATE["sent"] = i + 1
    await send({"type": "websocket.send", "text": "end"})
    while (await receive())["type"] != "websocket.disconnect":
        pass
"""

APPS = {"star": STAR, "fast": FAST, "raw": RAW, "flood": FLOOD}

# Bare uvicorn serves all three apps from one process: this dispatcher picks one by the path's first
# segment below the root path, as edgecli's relay does.
BARE = r"""
import importlib.util, pathlib

HERE = pathlib.Path(__file__).parent
APPS = {}
for name in ("star", "fast", "raw", "flood"):
    spec = importlib.util.spec_from_file_location(f"{name}_index", HERE / name / "index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    APPS[name] = module.app

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    name = scope["path"][len(scope["root_path"]):].split("/")[1]
    await APPS[name](scope, receive, send)
"""
