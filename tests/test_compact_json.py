"""compact_json.encode_json: the C encoder made once must write exactly what the standard encoder does."""

from __future__ import annotations

import json
import json.encoder
from datetime import UTC, datetime

import pytest

from edgecli import compact_json
from edgecli.compact_json import decode_json, encode_json
from edgecli.events import Event

pytestmark = pytest.mark.timeout(10)

standard = json.JSONEncoder(separators=(",", ":"), default=str).encode

VALUES = [
    "plain",
    'quote " backslash \\ newline \n tab \t nul \x00 é → 😀 lone \udcff',
    1795837734.5421019,
    -0.0,
    1e300,
    float("inf"),
    float("nan"),
    2**70,
    True,
    None,
    [],
    {},
    {"a": [1, {"b": None}], "when": datetime(2024, 1, 1, tzinfo=UTC), "set": {1}},
    (1, "tuple"),
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_same_text_as_the_standard_encoder(value: object) -> None:
    assert encode_json(value) == standard(value)


def test_an_event_row_and_a_shared_value_encode_the_same_every_time() -> None:
    shared = {"k": "v"}
    event = Event("request", "GET / → 200", function="fn", fields={"x": shared, "y": shared})
    row = [event.ts, event.kind, event.function, None, None, None, event.level, event.message, event.fields]
    assert [encode_json(row) for _ in range(3)] == [standard(row)] * 3
    assert encode_json([shared, shared]) == '[{"k":"v"},{"k":"v"}]'


def test_the_c_encoder_is_used_and_the_standard_one_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert encode_json is not compact_json._standard  # CPython has the C encoder
    monkeypatch.setattr(json.encoder, "c_make_encoder", None)
    assert compact_json._reused_c_encoder() is None
    monkeypatch.setattr(json.encoder, "c_make_encoder", lambda *args: 1 / 0)  # another signature
    assert compact_json._reused_c_encoder() is None


def test_a_structure_holding_itself_is_an_error_not_a_hang() -> None:
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises((RecursionError, ValueError)):
        encode_json(loop)


@pytest.mark.parametrize("value", VALUES[:6] + VALUES[7:12], ids=range(11))
def test_decode_reads_back_what_encode_writes(value: object) -> None:
    text = encode_json(value)
    assert decode_json(text) == json.loads(text)


@pytest.mark.parametrize("text", ["", "[1", "[1] x", " [1]", "nope", '{"a":}'])
def test_decode_rejects_anything_but_exactly_one_json_value(text: str) -> None:
    with pytest.raises(ValueError):
        decode_json(text)
