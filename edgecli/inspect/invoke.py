"""`edgecli invoke NAME`: call a function on a running `edgecli serve`, print the response, and with
`--wait` follow the request's background tasks (by its x-request-id) in the event store until they settle.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from edgecli import __version__, listening
from edgecli.config import FUNCTION_NAME_RE, Config, load_config
from edgecli.console import Output, print_body, print_fields, print_status
from edgecli.errors import ProjectNotFoundError, UsageError
from edgecli.inspect.client import Response, send
from edgecli.project import find_project
from edgecli.render import status_tone

# Headers every response has; the rest (content-type, x-request-id, what the function set) are shown.
_BORING_HEADERS = frozenset(
    {"date", "server", "content-length", "connection", "keep-alive", "transfer-encoding"}
)


@dataclass(frozen=True)
class InvokeArgs:
    name: str
    data: str | None = None
    method: str | None = None
    headers: tuple[str, ...] = ()
    path: str = ""
    url: str | None = None
    port: int | None = None
    service_role: bool = False
    key: str | None = None  # anon | service_role | publishable | secret (KEY_CHOICES)
    user: str | None = None  # call as this signed-in user: a fresh access token with this `sub`
    wait: bool = False
    timeout: float = 60.0
    json_output: bool = False


@dataclass(frozen=True)
class Body:
    content: bytes | None
    content_type: str | None


def run(workdir: Path | None, args: InvokeArgs, output: Output) -> int:
    if args.timeout <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds (got {args.timeout}).")
    if not FUNCTION_NAME_RE.match(args.name):
        raise UsageError(
            f"{args.name!r} is not a function name: names are letters, digits, - and _, starting with a "
            "letter (a folder under supabase/functions/). Give a sub-path with --path, e.g. --path /a/b."
        )
    config = _config(workdir, args)
    body = read_data(args.data)
    headers = _request_headers(config, args, body)
    base = server_url(config, args)
    url = f"{base}/functions/v1/{args.name}{_sub_path(args.path)}"
    response = send((args.method or "POST").upper(), url, headers, body.content, args.timeout)
    request_id = response.header("x-request-id") or headers["x-request-id"]
    _print_response(output, response, request_id, args.json_output)
    ok = 200 <= response.status < 300
    if args.wait:
        from edgecli.inspect.wait import follow_request  # the store reader, only when following

        settled = follow_request(config.events_db, request_id, args.timeout, output, args.json_output)
        ok = ok and settled.ok
    return 0 if ok else 1


def server_url(config: Config, args: InvokeArgs) -> str:
    """--url, else --port on this machine, else the running serve of this project, else config.toml's."""
    if args.url is not None and args.port is not None:
        raise UsageError("give either --url or --port, not both (--port N means http://127.0.0.1:N).")
    if args.url is not None:
        base = args.url
    elif args.port is not None:
        base = listening.client_url("127.0.0.1", args.port)
    else:
        running = listening.url_for(config.state_dir, args.name)
        base = running or listening.client_url(config.host, config.port)
    return base.rstrip("/").removesuffix("/functions/v1")


def _config(workdir: Path | None, args: InvokeArgs) -> Config:
    """The project's config (port, JWT secret, event store); with --url and no project, the defaults."""
    try:
        return load_config(find_project(workdir), with_secrets=False)
    except ProjectNotFoundError:
        if (args.url is None and args.port is None) or args.wait or workdir is not None:
            raise
        return Config(project_dir=Path.cwd())


def read_data(data: str | None) -> Body:
    """--data as JSON text, @file, or - (stdin); JSON bodies are sent as application/json."""
    if data is None:
        return Body(None, None)
    if data == "-":
        content = sys.stdin.buffer.read()
    elif data.startswith("@"):
        source = Path(data[1:]).expanduser()
        try:
            content = source.read_bytes()
        except OSError as exc:
            raise UsageError(
                f"--data {data}: cannot read {source} ({exc.strerror}). Give a readable file after @, "
                "inline JSON, or - to read the body from stdin."
            ) from None
    else:
        content = data.encode()
        if data.lstrip()[:1] in ("{", "["):
            _check_json(data)  # meant as JSON: a typo must not go out silently as plain text
    return Body(content, _content_type(content))


def _check_json(text: str) -> None:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--data is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}. Quote it for the "
            """shell, e.g. --data '{"name": "Ada"}', or pass a file with --data @body.json."""
        ) from None


def _is_json(content: bytes) -> bool:
    try:
        json.loads(content)
    except ValueError:
        return False
    return True


def _content_type(content: bytes) -> str:
    if _is_json(content):
        return "application/json"
    try:
        content.decode()
    except UnicodeDecodeError:
        return "application/octet-stream"
    return "text/plain; charset=utf-8"


def parse_headers(raw: tuple[str, ...]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for item in raw:
        name, sep, value = item.partition(":")
        name = name.strip()
        if not sep or not name or any(c.isspace() for c in name):
            raise UsageError(
                f"-H {item!r} is not a header. Write it as 'Name: value', e.g. -H 'x-mode: test'."
            )
        headers[name.lower()] = value.strip()
    return headers


KEY_CHOICES = ("anon", "service_role", "publishable", "secret")


def api_key(config: Config, args: InvokeArgs) -> str:
    """The key `invoke` calls with: a legacy JWT (anon, service_role) or one of the new API keys."""
    from edgecli.host.auth import make_key
    from edgecli.host.signing_keys import PUBLISHABLE_KEY, SECRET_KEY

    if args.user is not None:
        if args.key or args.service_role:
            raise UsageError("--user calls as a signed-in user; it does not go with --key or --service-role.")
        return user_token(config, args.user)
    choice = args.key or ("service_role" if args.service_role else "anon")
    if choice not in KEY_CHOICES:
        raise UsageError(f"--key {choice!r} is not a key edgecli knows; allowed: {', '.join(KEY_CHOICES)}.")
    if args.service_role and choice != "service_role":
        raise UsageError(f"--service-role and --key {choice} name different keys; give only one of them.")
    if choice == "publishable":
        return PUBLISHABLE_KEY
    if choice == "secret":
        return SECRET_KEY
    return make_key(config.jwt_secret, choice)


def user_token(config: Config, sub: str) -> str:
    """An access token for user `sub`, as Supabase Auth issues one: signed with the project's first
    signing key when it has any, else HS256 with the JWT secret."""
    from edgecli.host.signing_keys import mint_for

    return mint_for(config, {"sub": sub, "role": "authenticated", "aud": "authenticated", "iss": "edgecli"})


def _request_headers(config: Config, args: InvokeArgs, body: Body) -> dict[str, str]:
    key = api_key(config, args)
    headers = {
        "authorization": f"Bearer {key}",
        "apikey": key,  # what Supabase clients send alongside; harmless here
        "x-request-id": uuid.uuid4().hex,  # known before the answer, so --wait can follow it
        "user-agent": f"edgecli/{__version__}",
    }
    if body.content_type:
        headers["content-type"] = body.content_type
    headers.update(parse_headers(args.headers))  # the user's own values win
    return headers


def _sub_path(path: str) -> str:
    if not path or path.startswith(("/", "?")):
        return path
    return "/" + path


def _print_response(output: Output, response: Response, request_id: str, json_output: bool) -> None:
    is_json = "json" in response.header("content-type") and _is_json(response.content)
    text = _body_text(response)
    if json_output:
        output.record(
            {
                "status": response.status,
                "headers": dict(response.headers),
                "body": json.loads(response.content) if is_json else text,
                "request": request_id,
            }
        )
        return
    print_status(output, f"HTTP {response.status} {response.reason}".rstrip(), status_tone(response.status))
    shown = [(name, value) for name, value in response.headers if name not in _BORING_HEADERS]
    print_fields(output, shown, aligned=False)
    if response.content:
        output.line()
        print_body(output, text, is_json=is_json)


def _body_text(response: Response) -> str:
    try:
        return response.content.decode(response.charset)
    except (UnicodeDecodeError, LookupError):
        return f"[{len(response.content)} bytes of binary data]"
