"""Server-to-server calls: checks a secret API key (sb_secret_...) itself, with verify_jwt off.

The new API keys are not JWTs, so Supabase's verify_jwt check does not take them; a function meant for
other servers (cron jobs, webhooks) turns it off and compares the caller's `apikey` header with the
project's secret keys, which every function gets as SUPABASE_SECRET_KEYS (a JSON map of name to key).

Try it:
    edgecli invoke __NAME__ --key secret
"""

import hmac
import json
import os

from starlette.requests import Request
from starlette.responses import JSONResponse

from edgecli import serve

SECRET_KEYS = json.loads(os.environ.get("SUPABASE_SECRET_KEYS", "{}"))


def key_name(presented: str) -> str | None:
    """The name of the secret key presented, compared in constant time; None when it is none of them."""
    for name, key in SECRET_KEYS.items():
        if hmac.compare_digest(presented.encode(), key.encode()):
            return name
    return None


async def handler(req: Request) -> JSONResponse:
    presented = req.headers.get("apikey") or req.headers.get("authorization", "").removeprefix("Bearer ")
    name = key_name(presented)
    if name is None:
        return JSONResponse({"error": "send a secret API key in the apikey header"}, status_code=401)
    return JSONResponse({"ok": True, "key": name})


serve(handler)
