"""Per-function dependencies under a real `edgecli serve`: each function's requirements.txt installed into
its own folder, two versions of one package side by side, a change reinstalling one function only, and a
broken requirement as that function's BOOT_ERROR. Wheels are made in the test: no network is used."""

from __future__ import annotations

import base64
import hashlib
import signal
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import psutil
import pytest
from serving import Served, make_project, wait_until

PACKAGE = "edgecli_tinydep"
USES_DEP = f"""\
import {PACKAGE}
from starlette.responses import JSONResponse


async def handler(req):
    return JSONResponse({{"version": {PACKAGE}.VERSION, "file": {PACKAGE}.__file__}})
"""
PLAIN = """\
from starlette.responses import PlainTextResponse


async def handler(req):
    return PlainTextResponse("plain")
"""


WHEEL_INFO = "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _record_line(name: str, text: str) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(text.encode())}"


def make_wheel(folder: Path, version: str) -> Path:
    """A minimal pure-Python wheel of PACKAGE at `version`, written by hand (no build backend needed)."""
    dist = f"{PACKAGE}-{version}"
    files = {
        f"{PACKAGE}/__init__.py": f'VERSION = "{version}"\n',
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": WHEEL_INFO,
    }
    record = [_record_line(name, text) for name, text in files.items()]
    files[f"{dist}.dist-info/RECORD"] = "\n".join([*record, f"{dist}.dist-info/RECORD,,"]) + "\n"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
    return path


def requirements(wheels: Path, spec: str) -> str:
    return f"--no-index\n--find-links {wheels}\n{spec}\n"


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    for version in ("1.0", "2.0"):
        make_wheel(folder, version)
    return folder


@pytest.mark.timeout(180)
def test_two_functions_see_their_own_version_and_a_change_reinstalls_one(
    tmp_path: Path, wheels: Path
) -> None:
    root = make_project(tmp_path / "p", {"one": USES_DEP, "two": USES_DEP})
    functions = root / "supabase" / "functions"
    (functions / "one" / "requirements.txt").write_text(requirements(wheels, f"{PACKAGE}==1.0"))
    (functions / "two" / "requirements.txt").write_text(requirements(wheels, f"{PACKAGE}==2.0"))
    with Served(root) as srv:
        one, two = srv.get("one").json(), srv.get("two").json()
        assert (one["version"], two["version"]) == ("1.0", "2.0")
        deps = root / "supabase" / ".temp" / "edgecli" / "deps"
        assert Path(one["file"]).is_relative_to(deps) and Path(two["file"]).is_relative_to(deps)
        assert Path(one["file"]).parent.parent != Path(two["file"]).parent.parent
        installs = srv.events(kind="log", function="one")
        assert any(
            e["message"].startswith("installed dependencies from requirements.txt in ") for e in installs
        )

        (functions / "one" / "requirements.txt").write_text(requirements(wheels, f"{PACKAGE}==2.0"))
        wait_until(lambda: srv.get("one").json()["version"] == "2.0", 120, what="one to see 2.0")
        reload = srv.wait_event(lambda e: "one" in e["message"], kind="reload")
        assert "two" not in reload["message"]
        assert srv.get("two").json()["version"] == "2.0"


@pytest.mark.timeout(180)
def test_an_unchanged_file_is_not_installed_again(tmp_path: Path, wheels: Path) -> None:
    root = make_project(tmp_path / "p", {"one": USES_DEP})
    (root / "supabase" / "functions" / "one" / "requirements.txt").write_text(
        requirements(wheels, f"{PACKAGE}==1.0")
    )
    for _ in range(2):
        with Served(root) as srv:
            assert srv.get("one").json()["version"] == "1.0"
            installed = [e for e in srv.events(kind="log") if "installed dependencies" in e["message"]]
    assert installed == []  # the second run found the first one's folder


@pytest.mark.timeout(180)
def test_a_broken_requirement_is_that_functions_boot_error(tmp_path: Path, wheels: Path) -> None:
    root = make_project(tmp_path / "p", {"broken": PLAIN, "fine": PLAIN})
    (root / "supabase" / "functions" / "broken" / "requirements.txt").write_text(
        requirements(wheels, f"{PACKAGE}==9.9")
    )
    with Served(root) as srv:
        response = srv.get("broken")
        assert response.status_code == 503
        assert response.json()["code"] == "BOOT_ERROR"
        assert "Could not find a version that satisfies the requirement" in response.json()["message"]
        assert srv.get("fine").text == "plain"
        error = srv.wait_event(kind="boot_error", function="broken")
        assert "requirements.txt failed" in error["message"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_an_install_in_progress_dies_with_serve(tmp_path: Path, sig: int) -> None:
    # An index that takes connections and never answers: the installer waits until it is stopped.
    index = socket.socket()
    index.bind(("127.0.0.1", 0))
    index.listen(16)
    url = f"http://127.0.0.1:{index.getsockname()[1]}/simple"
    root = make_project(tmp_path / "p", {"slow": PLAIN})
    (root / "supabase" / "functions" / "slow" / "requirements.txt").write_text(
        f"--index-url {url}\n{PACKAGE}\n"
    )
    try:
        with Served(root) as srv:
            srv.wait_event(lambda e: "installing dependencies" in e["message"], kind="log")
            installer = wait_until(lambda: [p for p in srv.family() if "pip" in " ".join(p.cmdline())], 30)
            if sig == signal.SIGKILL:
                assert srv.proc is not None
                srv.proc.kill()
                psutil.wait_procs(installer, timeout=10)
                assert not [p for p in installer if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        index.close()


def install_ahead(root: Path, file: str) -> subprocess.CompletedProcess[str]:
    """What `edgecli build`'s Dockerfile runs in the project's root, before serve."""
    return subprocess.run(
        [sys.executable, "-m", "edgecli.host.deps", file],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.timeout(180)
def test_dependencies_installed_before_serve_are_not_installed_again(tmp_path: Path, wheels: Path) -> None:
    """What `edgecli build`'s Dockerfile runs (python -m edgecli.host.deps FILE...) leaves a function's
    dependencies where serve looks for them: a container installs nothing when it starts."""
    root = make_project(tmp_path / "p", {"one": USES_DEP})
    file = root / "supabase" / "functions" / "one" / "requirements.txt"
    file.write_text(requirements(wheels, f"{PACKAGE}==2.0"))
    done = install_ahead(root, "supabase/functions/one/requirements.txt")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "installed dependencies from requirements.txt" in done.stdout
    with Served(root, "--prod", json_output=False) as srv:
        assert srv.get("one").json()["version"] == "2.0"
        assert not [e for e in srv.events(kind="log") if "dependencies" in e["message"]]
    broken = install_ahead(root, "supabase/functions/one/nothing.txt")
    assert broken.returncode == 1 and broken.stderr.startswith("edgecli: supabase/functions/one/nothing.txt")
    assert "Traceback" not in broken.stderr
