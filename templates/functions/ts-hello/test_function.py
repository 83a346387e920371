"""Tests of the __NAME__ function (TypeScript, served by Deno) against a real `edgecli serve`.

Run them with `pytest supabase/functions` (pytest must be installed beside edgecli, and Deno with
`pip install 'edgecli[deno]'`).
"""


def test_greets_by_name(edge):
    r = edge.invoke("__NAME__", json={"name": "Functions"})
    assert r.status_code == 200
    assert r.json() == {"message": "Hello Functions!"}
    assert any(e["message"] == "__NAME__ says hello to Functions" for e in edge.logs(r))
