"""Tests of the background function against a real `edgecli serve` (the `edge` fixture of edgecli.testing).

Run them with `pytest supabase/functions` (pytest must be installed beside edgecli). A test whose
requests leave background tasks running fails: wait for them with `edge.wait_for_tasks(response)`.
"""

import pytest


def test_finishes_the_job_in_the_background(edge):
    r = edge.invoke("background", json={"steps": 1})
    assert r.status_code == 202  # answered at once
    tasks = edge.wait_for_tasks(r, timeout=10)  # then the job, in the background
    assert [t.status for t in tasks] == ["completed"]
    job = r.json()["job"]
    assert any(e["message"] == f"job {job}: finished" for e in edge.logs(r))


def test_a_failing_job_is_reported(edge):
    r = edge.invoke("background", json={"steps": 1, "fail": True})
    [task] = edge.wait_for_tasks(r, timeout=10)
    assert task.status == "failed"
    assert "failed on purpose" in task.error


@pytest.mark.edge(policy="oneshot")
def test_oneshot_cuts_the_job_off(edge):
    r = edge.invoke("background", json={"steps": 3})
    assert [t.reason for t in edge.wait_for_tasks(r, timeout=10)] == ["termination"]
