"""The project on disk: find it (`--workdir` or the nearest parent), create it (`edgecli init`) and add
functions to it from the templates shipped in `edgecli.templates` (`edgecli new`).
"""

from __future__ import annotations

import ast
import itertools
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from edgecli.config import FUNCTION_NAME_RE, parse_toml
from edgecli.console import Output
from edgecli.errors import ConfigError, EdgecliError, ProjectNotFoundError, UsageError

CONFIG = Path("supabase") / "config.toml"
DEFAULT_TEMPLATE = "hello"
# `new --auth`: who may call the function. user/apikey bring their own template; apikey and none turn
# verify_jwt off (the new API keys are not JWTs, so Supabase's check would refuse them).
AUTH_MODES = ("user", "apikey", "none")
_NO_VERIFY_JWT = frozenset({"apikey", "none"})
# Template files say __NAME__ where the function's name goes (routes, log prefixes, the invoke line).
NAME_PLACEHOLDER = "__NAME__"
PROJECT_ID_PLACEHOLDER = "__PROJECT_ID__"
ENTRYPOINT = "index.py"
TS_ENTRYPOINT = "index.ts"
# A template's tests: written as test_<name>.py, `-` as `_`, so that every function's test module has a name
# of its own and pytest collects them all together.
TEST_TEMPLATE = "test_function.py"
_SKIP_FILES = frozenset({"__pycache__", ".DS_Store"})


@dataclass(frozen=True)
class Template:
    """A function template: a folder under templates/functions/ whose index.py starts with a docstring (or
    whose index.ts starts with a block of `//` comments)."""

    name: str
    description: str  # the docstring's first line
    try_it: str  # the `edgecli invoke …` line from the docstring, with the NAME placeholder
    folder: Traversable
    entrypoint: str = ENTRYPOINT  # index.ts for a TypeScript template


def find_project(workdir: Path | None) -> Path:
    """The directory holding supabase/config.toml: `workdir`, else the cwd or its nearest parent."""
    if workdir is not None:
        root = workdir.expanduser().resolve()
        if not (root / CONFIG).is_file():
            raise ProjectNotFoundError(
                f"--workdir {workdir}: there is no supabase/config.toml in that directory. Point --workdir "
                f"at the directory that holds supabase/, or create a project there with "
                f"`edgecli init --workdir {workdir}`."
            )
        return root
    start = Path.cwd().resolve()
    for candidate in (start, *start.parents):
        if (candidate / CONFIG).is_file():
            return candidate
    raise ProjectNotFoundError(
        f"no supabase/config.toml in {start} or any directory above it, so there is no project to work "
        "on. Run `edgecli init` to create one here, or pass --workdir DIR to use an existing one."
    )


def init_project(target: Path, *, force: bool, output: Output) -> None:
    """Write supabase/config.toml, supabase/functions/ and supabase/.gitignore under `target`."""
    root = target.expanduser().resolve()
    config = root / CONFIG
    if config.exists() and not force:
        raise EdgecliError(
            f"{_shown(config)} already exists; nothing was changed. Run `edgecli init --force` to replace "
            "it with the documented template (functions and other files are left alone)."
        )
    text = _read_template_text("config.toml").replace(PROJECT_ID_PLACEHOLDER, _project_id(root))
    gitignore = config.parent / ".gitignore"
    try:
        (config.parent / "functions").mkdir(parents=True, exist_ok=True)
        _write_atomically(config, text)
        wrote_gitignore = not gitignore.exists()
        if wrote_gitignore:
            gitignore.write_text(_read_template_text("gitignore"), encoding="utf-8")
    except OSError as exc:
        raise EdgecliError(
            f"cannot create the project in {root}: {exc}. Check that it is writable."
        ) from None
    output.success(f"Wrote {_shown(config)} (see [edge_runtime] for policies and limits)")
    output.success(f"Created {_shown(config.parent / 'functions')}/")
    if wrote_gitignore:
        output.success(f"Wrote {_shown(gitignore)} (ignores .temp and .env files)")
    output.line("Next:")
    output.line(f"  edgecli new hello{_workdir_flag(root)}")
    output.line(f"  edgecli serve{_workdir_flag(root)}")


def new_function(
    workdir: Path | None, name: str | None, *, template: str, output: Output, auth: str | None = None
) -> None:
    """Scaffold supabase/functions/NAME/ from `template` and add [functions.NAME] to config.toml."""
    _check_name(name)
    assert name is not None  # for the type checker: _check_name refused None
    chosen = _get_template(_auth_template(auth, template))
    root = find_project(workdir)
    config = root / CONFIG
    verify_jwt = (auth or chosen.name) not in _NO_VERIFY_JWT
    new_text = _config_with_block(config, name, chosen.entrypoint, verify_jwt=verify_jwt)
    folder = config.parent / "functions" / name
    if folder.exists() or folder.is_symlink():
        raise EdgecliError(
            f"{_shown(folder)} already exists; edgecli never overwrites a function. Pick another name, or "
            "delete that folder first."
        )
    test_name = test_file_name(name, folder.parent)
    _copy_template(chosen, folder, name, test_name)
    if new_text is not None:
        try:
            _write_atomically(config, new_text)
        except OSError as exc:
            shutil.rmtree(folder, ignore_errors=True)  # all or nothing: no function without its block
            raise EdgecliError(f"cannot update {_shown(config)}: {exc}. Nothing was created.") from None
    output.success(f"Created {_shown(folder / chosen.entrypoint)} from the {chosen.name} template")
    tests = folder / test_name
    if tests.is_file():
        output.success(f"Created {_shown(tests)}: run it with `pytest supabase/functions`")
    if new_text is None:
        output.line(f"note: {_shown(config)} already has [functions.{name}]; left it as it is.")
    else:
        output.success(f"Added [functions.{name}] to {_shown(config)}")
    output.line("Next:")
    output.line(f"  edgecli serve{_workdir_flag(root)}")
    output.line(f"  {_with_workdir(chosen.try_it.replace(NAME_PLACEHOLDER, name), root)}")


def print_templates(output: Output) -> None:
    """`edgecli new --list`: one line per template with what it shows."""
    templates = list_templates()
    width = max(len(t.name) for t in templates)
    output.line("Templates (use with `edgecli new NAME --template T`):")
    for t in templates:
        default = " (default)" if t.name == DEFAULT_TEMPLATE else ""
        description = t.description.replace(NAME_PLACEHOLDER, "<name>")
        output.line(f"  {t.name.ljust(width)}  {description}{default}")


def list_templates() -> list[Template]:
    """Every function template shipped with edgecli, by name."""
    root = resources.files("edgecli.templates") / "functions"
    found = [
        _load_template(entry) for entry in root.iterdir() if entry.is_dir() and entry.name[0] not in "_."
    ]
    return sorted(found, key=lambda t: t.name)


def _load_template(folder: Traversable) -> Template:
    if (folder / TS_ENTRYPOINT).is_file():
        entrypoint = TS_ENTRYPOINT
        source = (folder / entrypoint).read_text(encoding="utf-8").splitlines()
        comments = itertools.takewhile(lambda line: line.startswith("//"), source)
        doc = "\n".join(line.removeprefix("//") for line in comments)
    else:
        entrypoint = ENTRYPOINT
        doc = ast.get_docstring(ast.parse((folder / entrypoint).read_text(encoding="utf-8"))) or ""
    lines = [line.strip() for line in doc.splitlines()]
    try_it = next((line for line in lines if line.startswith("edgecli invoke")), "")
    return Template(folder.name, lines[0] if lines else "", try_it, folder, entrypoint)


def _get_template(name: str) -> Template:
    templates = {t.name: t for t in list_templates()}
    if name not in templates:
        raise UsageError(
            f"unknown template {name!r}; available: {', '.join(templates)}. "
            "`edgecli new --list` says what each one shows."
        )
    return templates[name]


def _auth_template(auth: str | None, template: str) -> str:
    """The template `new --auth` scaffolds from: user and apikey have their own; none keeps `template`."""
    if auth is None or auth == "none":
        return template
    if auth not in AUTH_MODES:
        raise UsageError(f"--auth {auth!r} is not an auth mode; allowed: {', '.join(AUTH_MODES)}.")
    if template not in (DEFAULT_TEMPLATE, auth):
        raise UsageError(
            f"--auth {auth} scaffolds its own template, so it does not go with --template {template}. Drop "
            f"one of them (--auth none keeps any template and turns verify_jwt off)."
        )
    return auth


def _check_name(name: str | None) -> None:
    if name is None:
        raise UsageError(
            "missing the function name: run `edgecli new NAME [--template T]`, e.g. `edgecli new hello`; "
            "`edgecli new --list` shows the templates."
        )
    if not FUNCTION_NAME_RE.fullmatch(name):
        raise UsageError(
            f"{name!r} is not a valid function name: it must start with a letter and contain only letters, "
            "digits, '_' and '-' (^[A-Za-z][A-Za-z0-9_-]*$), e.g. `edgecli new hello-world`. Nothing was "
            "written."
        )


def _config_with_block(
    config: Path, name: str, entrypoint: str = ENTRYPOINT, *, verify_jwt: bool = True
) -> str | None:
    """config.toml's text with a [functions.NAME] block appended, or None when the block exists.

    The block is appended as text (rendered by tomlkit) rather than re-serialising the document, so every
    existing byte — comments, ordering, formatting — stays exactly as the user wrote it.
    """
    shown = _shown(config)
    text = config.read_text(encoding="utf-8")
    functions = parse_toml(text, shown).get("functions", {})
    if not isinstance(functions, dict):
        raise ConfigError(f"{shown}: `functions` must be a table of [functions.NAME] blocks. Fix it first.")
    if name in functions:
        return None
    block = _function_block(name, entrypoint, verify_jwt)
    separator = "" if not text or text.endswith("\n\n") else "\n" if text.endswith("\n") else "\n\n"
    new_text = text + separator + block
    try:
        added = parse_toml(new_text, shown).get("functions", {}).get(name)
    except ConfigError:
        added = None
    if added is None:  # e.g. `functions = {...}` written inline, which a table header cannot extend
        raise EdgecliError(
            f"cannot add [functions.{name}] to {shown} automatically; nothing was created. Add this block "
            f"by hand, then run `edgecli new` again:\n{block}"
        )
    return new_text


def _function_block(name: str, entrypoint: str, verify_jwt: bool = True) -> str:
    import tomlkit  # only `edgecli new` writes TOML; invoke and logs find the project through here

    table = tomlkit.table()
    table.add("enabled", True)
    table.add("verify_jwt", verify_jwt)
    table.add("entrypoint", f"./functions/{name}/{entrypoint}")
    functions = tomlkit.table(is_super_table=True)
    functions.add(name, table)
    doc = tomlkit.document()
    doc.add("functions", functions)
    return tomlkit.dumps(doc)


def _copy_template(template: Template, folder: Path, name: str, test_name: str) -> None:
    try:
        _copy_tree(template.folder, folder, name, test_name)
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise EdgecliError(f"cannot create {_shown(folder)}: {exc}. Nothing was created.") from None


def test_file_name(name: str, functions: Path) -> str:
    """The scaffolded test's file name: test_<name>.py, made its own when another function's folder holds
    a test of that name (my-router beside my_router): pytest's default import mode needs each test file
    of a run to have a name of its own."""
    base = f"test_{name.replace('-', '_')}"
    try:
        taken = {path.name for path in functions.glob(f"*/{base}*.py")}
    except OSError:
        taken = set()
    candidate, n = f"{base}.py", 2
    while candidate in taken:
        candidate, n = f"{base}_{n}.py", n + 1
    return candidate


def _copy_tree(source: Traversable, target: Path, name: str, test_name: str, top: bool = True) -> None:
    target.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name in _SKIP_FILES or entry.name.endswith(".pyc"):
            continue
        if entry.is_dir():
            _copy_tree(entry, target / entry.name, name, test_name, top=False)
        else:
            data = entry.read_bytes().replace(NAME_PLACEHOLDER.encode(), name.encode())
            written = test_name if top and entry.name == TEST_TEMPLATE else entry.name
            (target / written).write_bytes(data)


def _read_template_text(name: str) -> str:
    return (resources.files("edgecli.templates") / name).read_text(encoding="utf-8")


def _write_atomically(path: Path, text: str) -> None:
    """Replace `path` in one step, so an interrupted write never leaves a half-written config."""
    if not path.exists():
        path.write_text(text, encoding="utf-8")
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _project_id(root: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", root.name).strip("-") or "edgecli-project"


def _shown(path: Path) -> str:
    """A path as the user should read it: relative to the current directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _workdir_flag(root: Path) -> str:
    """` --workdir DIR` when the project is not the current directory (or one of its parents)."""
    cwd = Path.cwd().resolve()
    if cwd == root or cwd.is_relative_to(root):
        return ""
    return f" --workdir {os.path.relpath(root, cwd) if root.is_relative_to(cwd) else root}"


def _with_workdir(command: str, root: Path) -> str:
    flag = _workdir_flag(root)
    if not flag:
        return command
    head, _, rest = command.partition(" invoke ")
    name, _, args = rest.partition(" ")
    return f"{head} invoke {name}{flag}{(' ' + args) if args else ''}"
