"""The pytest plugin, run as users run it: nested pytest sessions (pytester) against a project on disk, each
starting real `edgecli serve` processes through the `edge` fixture."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

# Imported here, so the nested sessions (run in this process) share these modules instead of importing
# them afresh each time: pytester restores sys.modules after each run, and httpx (which imports httpcore
# on first use) would not recognise the errors of an httpcore imported anew.
import httpcore  # noqa: F401
import psutil
import pytest
from serving import wait_until

import edgecli.testing.plugin
import edgecli.testing.server  # noqa: F401

pytest_plugins = ["pytester"]
# A nested session starts Python, pytest and at least one serve: minutes on a loaded machine, not seconds.
NESTED_S = 240

WORK = """\
import asyncio
from starlette.responses import JSONResponse
from edgecli import EdgeRuntime, serve

async def work(seconds: float, fail: bool) -> None:
    await asyncio.sleep(seconds)
    if fail:
        raise RuntimeError("work failed on purpose")
    print("work done")

async def handler(req):
    body = await req.json() if await req.body() else {}
    if "sleep" in body:
        EdgeRuntime.wait_until(work(body["sleep"], body.get("fail", False)))
    print("handled", body.get("tag"))
    return JSONResponse({"claims": req.headers.get("x-edgecli-jwt-claims")})

serve(handler)
"""
CONFIG = """\
[api]
port = 54321

[edge_runtime]
policy = "per_worker"
graceful_exit_timeout_sec = 2

[functions.open]
verify_jwt = false
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """pytester's directory holds a project with functions `work` and `open` (the same code)."""
    pytester.makefile(".toml", **{"supabase/config": CONFIG})
    for name in ("work", "open"):
        (pytester.path / "supabase" / "functions" / name).mkdir(parents=True)
        (pytester.path / "supabase" / "functions" / name / "index.py").write_text(WORK)
    return pytester


def run(pytester: pytest.Pytester, tests: str, *args: str, subprocess: bool = False) -> pytest.RunResult:
    pytester.makepyfile(test_edge=textwrap.dedent(tests))
    runner = pytester.runpytest_subprocess if subprocess else pytester.runpytest
    result = runner("-p", "no:randomly", "-p", "no:cacheprovider", *args)
    assert not _servers_of(pytester), "a server of the nested session is still running"
    return result


def _servers_of(pytester: pytest.Pytester) -> list[psutil.Process]:
    where = str(pytester.path)
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(where in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


@pytest.mark.timeout(NESTED_S)
def test_tasks_complete_fail_and_time_out(project: pytest.Pytester) -> None:
    result = run(
        project,
        """
        import pytest

        def test_completed(edge):
            r = edge.invoke("work", json={"sleep": 0.05})
            assert r.status_code == 200
            [task] = edge.wait_for_tasks(r, timeout=10)
            assert (task.name, task.status, task.error, task.reason) == ("work", "completed", None, None)
            assert task.duration_ms > 0 and task.task
            assert any(e["message"] == "work done" and e["task"] == task.task for e in edge.logs(r))

        def test_failed(edge):
            r = edge.invoke("work", json={"sleep": 0.01, "fail": True})
            [task] = edge.wait_for_tasks(r)
            assert task.status == "failed"
            assert "RuntimeError: work failed on purpose" in task.error

        def test_timeout_names_the_running_task(edge):
            r = edge.invoke("work", json={"sleep": 4})  # still running when the 0.2 s are up, even if slow
            with pytest.raises(AssertionError, match=r"still running: work \\(task "):
                edge.wait_for_tasks(r, timeout=0.2)
            assert [t.status for t in edge.wait_for_tasks(r, timeout=20)] == ["completed"]
        """,
    )
    result.assert_outcomes(passed=3)


@pytest.mark.timeout(NESTED_S)
def test_oneshot_cuts_tasks_off(project: pytest.Pytester) -> None:
    result = run(
        project,
        """
        import pytest

        @pytest.mark.edge(policy="oneshot")
        def test_cut_off(edge):
            r = edge.invoke("work", json={"sleep": 5})
            tasks = edge.wait_for_tasks(r, timeout=20)
            assert [(t.status, t.reason) for t in tasks] == [("cancelled", "termination")]

        @pytest.mark.edge(policy="oneshot")
        def test_not_waiting_is_no_leak_either(edge):
            edge.invoke("work", json={"sleep": 5})
        """,
    )
    result.assert_outcomes(passed=2)


@pytest.mark.timeout(NESTED_S)
def test_leak_check_fails_the_test_and_allow_pending_opts_out(project: pytest.Pytester) -> None:
    result = run(
        project,
        """
        def test_leaks(edge):
            edge.invoke("work", json={"sleep": 8})

        def test_allowed(edge):
            edge.allow_pending()
            edge.invoke("work", json={"sleep": 8})

        def test_waited(edge):
            edge.wait_for_tasks(edge.invoke("work", json={"sleep": 0.01}))
        """,
    )
    result.assert_outcomes(passed=3, errors=1)  # test_leaks passed its call, then failed its teardown
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks*",
            "*test_leaks ended with background tasks*still running: work (task *",
        ]
    )
    assert "test_allowed ended" not in result.stdout.str()


@pytest.mark.timeout(NESTED_S)
def test_a_failed_test_gets_no_second_report_for_its_tasks(project: pytest.Pytester) -> None:
    result = run(
        project,
        """
        def test_fails_early(edge):
            edge.invoke("work", json={"sleep": 8})
            assert False, "the test's own failure"
        """,
    )
    result.assert_outcomes(failed=1)
    assert "ended with background tasks" not in result.stdout.str()


@pytest.mark.timeout(NESTED_S)
def test_claims_and_keys(project: pytest.Pytester) -> None:
    result = run(
        project,
        """
        import json
        import pytest

        def test_claims_reach_the_function(edge):
            r = edge.invoke("work", claims={"sub": "user-1", "role": "authenticated"})
            assert r.status_code == 200
            assert json.loads(r.json()["claims"]) == {"sub": "user-1", "role": "authenticated"}

        def test_keys(edge):
            anon = json.loads(edge.invoke("work").json()["claims"])
            service = json.loads(edge.invoke("work", role="service_role").json()["claims"])
            assert (anon["role"], service["role"]) == ("anon", "service_role")

        def test_no_key_is_401(edge):
            r = edge.invoke("work", role=None)
            assert r.status_code == 401
            assert r.json() == {"msg": "Error: Missing authorization header"}
            assert edge.invoke("open", role=None).status_code == 200
            assert edge.wait_for_tasks(r) == []

        @pytest.mark.edge(verify_jwt=False)
        def test_verify_jwt_off(edge):
            r = edge.invoke("work", role=None)
            assert r.status_code == 200 and r.json() == {"claims": None}
        """,
    )
    result.assert_outcomes(passed=4)


@pytest.mark.timeout(NESTED_S)
def test_each_test_sees_only_its_own_records_on_a_shared_server(project: pytest.Pytester) -> None:
    result = run(
        project,
        """
        import pytest

        seen = {}

        def test_first(edge):
            seen["url"] = edge.url
            edge.allow_pending()
            r = edge.invoke("work", json={"tag": "first", "sleep": 1})
            assert [e["message"] for e in edge.logs(r) if e["kind"] == "log"] == ["handled first"]

        def test_second(edge):
            assert edge.url == seen["url"]  # the same server
            r = edge.invoke("work", json={"tag": "second"})
            messages = [e["message"] for e in edge.events(kind="log")]
            assert messages == ["handled second"]
            assert [e["request"] for e in edge.events(kind="request")] == [r.headers["x-request-id"]]
            assert edge.events(level="error") == []
            assert [e["kind"] for e in edge.events(function="work", level="info")] == ["log", "request"]

        def test_bad_filter(edge):
            with pytest.raises(TypeError, match="unknown filters"):
                edge.events(status=200)
        """,
    )
    result.assert_outcomes(passed=3)


@pytest.mark.timeout(NESTED_S)
def test_marker_env_workdir_and_ini(project: pytest.Pytester) -> None:
    elsewhere = project.path / "other"
    (elsewhere / "supabase" / "functions" / "env").mkdir(parents=True)
    (elsewhere / "supabase" / "config.toml").write_text("[functions.env]\nverify_jwt = false\n")
    (elsewhere / "supabase" / "functions" / "env" / "index.py").write_text(
        "import os\nfrom starlette.responses import PlainTextResponse\nfrom edgecli import serve\n"
        "async def handler(req):\n    return PlainTextResponse(os.environ.get('GREETING', '-'))\n"
        "serve(handler)\n"
    )
    project.makeini("[pytest]\nedge_workdir = other\n")
    result = run(
        project,
        """
        import pytest

        def test_ini_workdir(edge):
            assert edge.invoke("env").text == "-"

        @pytest.mark.edge(env={"GREETING": 'hi "there"\\nsecond line'})
        def test_env(edge):
            assert edge.invoke("env").text == 'hi "there"\\nsecond line'

        @pytest.mark.edge(workdir=".")
        def test_marker_workdir(edge):
            assert edge.invoke("env").status_code == 404

        @pytest.mark.edge(policy="fast")
        def test_bad_policy(edge):
            pass
        """,
    )
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*policy='fast' is not a worker policy: use one of per_worker*"])


@pytest.mark.timeout(NESTED_S)
def test_a_server_that_cannot_start_is_a_clear_error(project: pytest.Pytester) -> None:
    (project.path / "supabase" / "config.toml").write_text('[edge_runtime]\npolicy = "fast"\n')
    result = run(project, "def test_one(edge):\n    pass\n\ndef test_two(edge):\n    pass\n")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*config.toml:2*policy*fast*"])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.timeout(NESTED_S)
def test_a_server_that_dies_fails_the_next_test_and_the_session_loudly(project: pytest.Pytester) -> None:
    result = run(
        project,
        """
        import os, signal, time
        import psutil

        def test_kills_its_server(edge):
            [serve] = [p for p in psutil.Process().children() if "serve" in p.cmdline()]
            os.kill(serve.pid, signal.SIGKILL)  # left for its parent to reap, as a crash would be
            while serve.status() != psutil.STATUS_ZOMBIE:
                time.sleep(0.01)

        def test_next(edge):
            pass
        """,
        # Its own process: the session's servers are then the only children of the pytest it kills in.
        subprocess=True,
    )
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_next*",
            "*edgecli serve for * exited with status -9*",
            "*ERROR at teardown of test_next*",
            "*edgecli serve had exited by itself, with status -9*",
        ]
    )


@pytest.mark.timeout(NESTED_S)
def test_a_session_split_by_pytest_xdist_gives_each_worker_its_own_server(project: pytest.Pytester) -> None:
    result = run(
        project,
        """
        import os, pathlib, pytest

        @pytest.mark.parametrize("n", range(6))
        def test_work(edge, n):
            r = edge.invoke("work", json={"tag": n, "sleep": 0.05})
            [task] = edge.wait_for_tasks(r, timeout=10)
            assert task.status == "completed"
            with open(pathlib.Path(__file__).parent / "served.txt", "a") as served:
                served.write(f"{os.environ['PYTEST_XDIST_WORKER']} {edge.url}\\n")
        """,
        "-n",
        "2",
        subprocess=True,
    )
    result.assert_outcomes(passed=6)
    served = {tuple(line.split()) for line in (project.path / "served.txt").read_text().splitlines()}
    workers = {worker for worker, _ in served}
    assert len(workers) == 2, served  # both test processes ran tests...
    assert len(served) == 2 and len({url for _, url in served}) == 2, served  # ...each on its own server


@pytest.mark.timeout(NESTED_S)
def test_ctrl_c_during_a_test_still_stops_its_server(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_edge="""
        import pathlib, time

        def test_interrupted(edge):
            edge.invoke("work", json={"sleep": 30})
            pathlib.Path("started").write_text("")
            time.sleep(60)
        """
    )
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly"]
    proc = subprocess.Popen(cmd, cwd=project.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: (project.path / "started").exists(), 60, what="the nested test to start")
        assert _servers_of(project)
        proc.send_signal(signal.SIGINT)  # what Ctrl-C at a terminal sends pytest
        out, _ = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert b"KeyboardInterrupt" in out, out.decode()
    assert not _servers_of(project)


@pytest.mark.timeout(NESTED_S)
def test_edge_server_from_a_plain_script(project: pytest.Pytester) -> None:
    script = project.makepyfile(
        script="""
        from edgecli.testing import EdgeServer

        with EdgeServer(".", verify_jwt=False) as edge:
            r = edge.invoke("work", json={"sleep": 0.05})
            print("status", r.status_code, [t.status for t in edge.wait_for_tasks(r)])
            print("logs", [e["message"] for e in edge.logs(r) if e["kind"] == "log"])
            state = edge.state_dir
        print("state kept", state.exists())
        """
    )
    result = project.run(sys.executable, str(script), timeout=90)
    assert result.ret == 0, result.stderr.str()
    result.stdout.fnmatch_lines(
        ["status 200 ['completed']", "logs ['handled None', 'work done']", "state kept False"]
    )
    assert not (project.path / "supabase" / ".temp").exists()  # the project's own store is untouched
    assert not _servers_of(project)


SIGNUP = """\
import asyncio
from starlette.responses import JSONResponse
from edgecli import EdgeRuntime, serve

async def send_welcome(email):
    await asyncio.sleep(0.05)
    print("welcome sent to", email)

async def handler(req):
    EdgeRuntime.wait_until(send_welcome((await req.json())["email"]))
    return JSONResponse({"ok": True})

serve(handler)
"""


@pytest.mark.timeout(NESTED_S)
def test_the_readme_example_passes(project: pytest.Pytester) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Testing your functions") :]
    example = section[section.index("```python\n") + 10 : section.index("```\n", section.index("```python"))]
    (project.path / "supabase" / "functions" / "signup").mkdir()
    (project.path / "supabase" / "functions" / "signup" / "index.py").write_text(SIGNUP)
    run(project, example).assert_outcomes(passed=2)
