"""Tests of the user function against a real `edgecli serve` (the `edge` fixture of edgecli.testing).

Run them with `pytest supabase/functions` (pytest must be installed beside edgecli).
"""


def test_answers_a_signed_in_user(edge):
    r = edge.invoke("user", claims={"sub": "alice", "role": "authenticated"})
    assert r.status_code == 200
    assert r.json()["user"] == "alice"


def test_refuses_the_anon_key(edge):
    assert edge.invoke("user").status_code == 403
