"""Tests of the __NAME__ function against a real `edgecli serve` (the `edge` fixture of edgecli.testing).

Run them with `pytest supabase/functions` (pytest must be installed beside edgecli).
"""


def test_greets_by_name(edge):
    r = edge.invoke("__NAME__", json={"name": "Functions"})
    assert r.status_code == 200
    assert r.json() == {"message": "Hello Functions!"}


def test_asks_for_a_json_body(edge):
    r = edge.invoke("__NAME__", data="not json")
    assert r.status_code == 400
