"""Tests of the router function against a real `edgecli serve` (the `edge` fixture of edgecli.testing).

Run them with `pytest supabase/functions` (pytest must be installed beside edgecli).
"""


def test_lists_the_items(edge):
    r = edge.invoke("router", method="GET", path="/items")
    assert r.status_code == 200
    assert {"id": 1, "name": "apple"} in r.json()


def test_creates_an_item_and_finds_it_again(edge):
    created = edge.invoke("router", path="/items", json={"name": "pear"})
    assert created.status_code == 201
    item = created.json()
    assert edge.invoke("router", method="GET", path=f"/items/{item['id']}").json() == item
