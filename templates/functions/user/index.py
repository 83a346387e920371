"""Signed-in users only: reads the caller's verified JWT claims and answers with their user id.

verify_jwt is on, so edgecli (as Supabase does) has checked the token's signature and expiry before
this code runs: HS256 with the project's secret, or ES256/RS256 with [auth] signing_keys_path. The
claims arrive as JSON in the x-edgecli-jwt-claims header. The anon key is a valid JWT but no user:
it gets 403.

Try it:
    edgecli invoke __NAME__ --user alice
"""

import json

from starlette.requests import Request
from starlette.responses import JSONResponse

from edgecli import serve


async def handler(req: Request) -> JSONResponse:
    claims = json.loads(req.headers.get("x-edgecli-jwt-claims", "{}"))
    if claims.get("role") != "authenticated" or not claims.get("sub"):
        return JSONResponse(
            {"error": "sign in first: this function takes a user's access token"}, status_code=403
        )
    return JSONResponse({"user": claims["sub"], "email": claims.get("email")})


serve(handler)
