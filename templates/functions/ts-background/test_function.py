"""Tests of the __NAME__ function (TypeScript, served by Deno) against a real `edgecli serve`.

Run them with `pytest supabase/functions` (pytest must be installed beside edgecli, and Deno with
`pip install 'edgecli[deno]'`). A test whose requests leave background tasks running fails: wait for
them with `edge.wait_for_tasks(response)`.
"""


def test_finishes_the_job_in_the_background(edge):
    r = edge.invoke("__NAME__", json={"steps": 1})
    assert r.status_code == 202  # answered at once
    tasks = edge.wait_for_tasks(r, timeout=10)  # then the job, in the background
    assert [t.status for t in tasks] == ["completed"]
    assert any(e["message"] == "__NAME__: step 1 of 1 done" for e in edge.logs(r))
