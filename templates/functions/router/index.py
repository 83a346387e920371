"""Several routes inside one function, with Starlette Routes under /__NAME__/...

A request to /functions/v1/__NAME__/items reaches this function with the path /__NAME__/items, as on
Supabase. The items live in memory, so each worker has its own list and a reload starts afresh.

Try it:
    edgecli invoke __NAME__ -X GET --path /items
More:
    edgecli invoke __NAME__ -X GET --path /items/1
    edgecli invoke __NAME__ -X POST --path /items --data '{"name": "pear"}'
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edgecli import serve

PREFIX = "/__NAME__"
items: dict[int, dict[str, object]] = {1: {"id": 1, "name": "apple"}, 2: {"id": 2, "name": "banana"}}


async def index(req: Request) -> JSONResponse:
    routes = [f"GET {PREFIX}/items", f"GET {PREFIX}/items/{{id}}", f"POST {PREFIX}/items"]
    return JSONResponse({"routes": routes})


async def list_items(req: Request) -> JSONResponse:
    return JSONResponse(list(items.values()))


async def get_item(req: Request) -> JSONResponse:
    item = items.get(req.path_params["item_id"])
    if item is None:
        return JSONResponse({"error": "no such item"}, status_code=404)
    return JSONResponse(item)


async def create_item(req: Request) -> JSONResponse:
    try:
        body = await req.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        return JSONResponse({"error": 'send a JSON body like {"name": "pear"}'}, status_code=400)
    item_id = max(items, default=0) + 1
    items[item_id] = {"id": item_id, "name": body["name"]}
    return JSONResponse(items[item_id], status_code=201)


app = Starlette(
    routes=[
        Route(PREFIX, index),
        Route(f"{PREFIX}/items", list_items, methods=["GET"]),
        Route(f"{PREFIX}/items", create_item, methods=["POST"]),
        Route(f"{PREFIX}/items/{{item_id:int}}", get_item),
    ]
)

serve(app)
