"""Tests of the __NAME__ function against a real `edgecli serve` (the `edge` fixture of edgecli.testing).

Run them with `pytest supabase/functions` (pytest must be installed beside edgecli).
"""

from edgecli.host.signing_keys import PUBLISHABLE_KEY, SECRET_KEY


def test_takes_the_secret_key(edge):
    r = edge.invoke("__NAME__", role=None, headers={"apikey": SECRET_KEY})
    assert r.status_code == 200
    assert r.json() == {"ok": True, "key": "default"}


def test_refuses_any_other_key(edge):
    assert edge.invoke("__NAME__", role=None, headers={"apikey": PUBLISHABLE_KEY}).status_code == 401
