"""JSON in, JSON out: the Supabase starter function, in Python.

Reads {"name": ...} from the request body and answers {"message": "Hello <name>!"}.

Try it:
    edgecli invoke __NAME__ --data '{"name": "Functions"}'
"""

from starlette.requests import Request
from starlette.responses import JSONResponse

from edgecli import serve


async def handler(req: Request) -> JSONResponse:
    try:
        body = await req.json()
    except ValueError:  # no body, or not JSON
        return JSONResponse({"error": 'send a JSON body like {"name": "Functions"}'}, status_code=400)
    name = body.get("name", "world") if isinstance(body, dict) else "world"
    return JSONResponse({"message": f"Hello {name}!"})


serve(handler)
