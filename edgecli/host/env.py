"""The environment a function's worker runs with (see docs/architecture.md, "A function's environment").

Layers, later wins:
1. a few host variables Python itself needs (PATH, HOME, locale, temp dir, venv, PYTHON*) — never the
   whole host environment, so a function cannot depend on something only the developer's shell has;
2. injected SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY, SUPABASE_DB_URL, and as the
   Supabase CLI does today SUPABASE_JWKS, SUPABASE_PUBLISHABLE_KEYS, SUPABASE_SECRET_KEYS;
3. `[edge_runtime.secrets]` (already resolved by the config loader);
4. the common env file (`--env-file`, else supabase/functions/.env);
5. the function's own supabase/functions/NAME/.env.

Env files are parsed with python-dotenv, `${VAR}` references included (resolved against the layers below
and the file's earlier lines). Problems in them are warnings returned to the caller, never exceptions:
a malformed line names file and line and the rest of the file still loads; `SUPABASE_*` names are
skipped as Supabase does, because the platform owns them.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv.parser import Binding, parse_stream
from dotenv.variables import parse_variables

from edgecli.config import Config, FunctionConfig
from edgecli.host.auth import make_key
from edgecli.host.signing_keys import api_keys_env, jwks_json

# Host variables a Python process needs to run well (find executables, a home, a locale, a temp dir,
# its virtualenv, certificates). Everything else the developer's shell happens to have stays out.
HOST_VARS = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "VIRTUAL_ENV",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NPM_CONFIG_REGISTRY",  # where Deno fetches npm: packages from (a mirror, or a test's own)
        "JSR_URL",  # and jsr: ones
    }
)
# LC_* set the locale; PYTHON* (PYTHONPATH, PYTHONUNBUFFERED, PYTHONHASHSEED, ...) shape the interpreter
# the developer chose to run edgecli with, and workers should behave like it; DENO_* (DENO_DIR, its
# cache, above all) do the same for the Deno that runs TypeScript functions.
HOST_PREFIXES = ("LC_", "PYTHON", "DENO_")
RESERVED_PREFIX = "SUPABASE_"


@dataclass(frozen=True, slots=True)
class EnvResult:
    """A worker's complete environment, and the warnings found building it (for the caller to print
    once per reload, not once per worker)."""

    env: dict[str, str]
    warnings: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _ParsedFile:
    bindings: tuple[tuple[str, str], ...]  # (name, raw value) in file order, SUPABASE_* already dropped
    warnings: tuple[str, ...]


_FileKey = tuple[str, int, int]  # (path, mtime_ns, size): a changed file gets a new key
_parsed: dict[str, tuple[_FileKey, _ParsedFile]] = {}


def build_function_env(
    config: Config, function: FunctionConfig, host: Mapping[str, str] | None = None
) -> EnvResult:
    """The environment for one worker of `function`. Cheap to call per worker: env files are parsed
    once per (path, mtime, size) and only the layering is redone. `host`: `host_env(os.environ)` when
    the caller keeps it (serve does: reading os.environ is most of the cost, and it does not change)."""
    env = dict(host) if host is not None else host_env(os.environ)
    env.update(injected_env(config))
    env.update(config.secrets)
    warnings: list[str] = []
    for path in (config.env_file, function.env_file):
        if path is None:
            continue
        parsed = _parse_cached(path)
        warnings.extend(parsed.warnings)
        _apply(env, parsed.bindings)
    return EnvResult(env, tuple(warnings))


def host_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed part of the host environment."""
    return {k: v for k, v in environ.items() if k in HOST_VARS or k.startswith(HOST_PREFIXES)}


def injected_env(config: Config) -> dict[str, str]:
    """What the platform gives every function, as `supabase functions serve` does."""
    return {
        "SUPABASE_URL": f"http://127.0.0.1:{config.port}",
        "SUPABASE_ANON_KEY": make_key(config.jwt_secret, "anon"),
        "SUPABASE_SERVICE_ROLE_KEY": make_key(config.jwt_secret, "service_role"),
        "SUPABASE_DB_URL": config.db_url,
        "SUPABASE_JWKS": jwks_json(config.signing_keys, config.jwt_secret),
        **api_keys_env(),
    }


def _apply(env: dict[str, str], bindings: tuple[tuple[str, str], ...]) -> None:
    # Resolved one by one so a line can use the names above it, as python-dotenv does.
    for name, raw in bindings:
        env[name] = "".join(atom.resolve(env) for atom in parse_variables(raw))


def _parse_cached(path: Path) -> _ParsedFile:
    key = _file_key(path)
    hit = _parsed.get(str(path))
    if hit is not None and hit[0] == key:
        return hit[1]
    parsed = parse_env_file(path)
    _parsed[str(path)] = (key, parsed)
    return parsed


def _file_key(path: Path) -> _FileKey:
    try:
        st = path.stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), st.st_mtime_ns, st.st_size)


def parse_env_file(path: Path) -> _ParsedFile:
    """Parse one env file; every problem becomes a warning naming the file (and line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        # The reloader may race a deletion; the next change event rebuilds without this file.
        return _ParsedFile((), (f"{path}: env file not found; none of its variables are set.",))
    except (OSError, UnicodeDecodeError) as exc:
        unreadable = f"{path}: cannot read this env file ({exc}); none of its variables are set."
        return _ParsedFile((), (unreadable,))
    bindings: list[tuple[str, str]] = []
    warnings: list[str] = []
    for binding in parse_stream(io.StringIO(text)):
        problem = _problem(path, binding)
        if problem:
            warnings.append(problem)
        elif binding.key is not None and binding.value is not None:
            bindings.append((binding.key, binding.value))
    return _ParsedFile(tuple(bindings), tuple(warnings))


def _problem(path: Path, binding: Binding) -> str | None:
    line = _line_of(binding)
    if binding.error:
        snippet = binding.original.string.strip().splitlines()[0][:60]
        return (
            f"{path}:{line}: cannot parse {snippet!r}; the line is ignored. "
            "Write it as NAME=value (quote values with spaces or '#')."
        )
    if binding.key is None:
        return None  # blank line or comment
    if binding.value is None:
        key = binding.key
        return f"{path}:{line}: {key!r} has no '=value'; it is ignored. Write it as {key}=value."
    if binding.key.startswith(RESERVED_PREFIX):
        return (
            f"{path}:{line}: skipping {binding.key}: names starting with {RESERVED_PREFIX} are reserved "
            "for the platform (as on Supabase). Rename the variable."
        )
    return None


_LEADING_BLANK = re.compile(r"\s*")


def _line_of(binding: Binding) -> int:
    """python-dotenv counts a binding from the end of the previous one, blank lines included; report the
    line where its text actually starts."""
    original = binding.original
    leading = _LEADING_BLANK.match(original.string)
    skipped = original.string[: leading.end()] if leading else ""
    # A trailing partial line of whitespace belongs to the binding's own line, so count newlines only.
    return original.line + skipped.count("\n")
