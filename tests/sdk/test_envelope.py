"""The Kinesis envelope: plain JSON a non-coalmine consumer can read; unwrap passes others through."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from coalmine.core.model import Channel, Decision, Reason
from coalmine.sdk import is_envelope, unwrap, use, wrap

TOKEN = "1.k1.eyJhIjoic2hvcCJ9.AAAAAAAAAAAAAAAAAAAAAA"


@pytest.mark.parametrize(
    "payload",
    [{"order": 42, "items": ["a", "b"], "note": "ünïcode"}, [1, 2, 3], "plain text", {}],
    ids=["dict", "list", "str", "empty"],
)
def test_json_payloads_are_embedded_as_json(payload: Any) -> None:
    data = wrap(payload, TOKEN)
    assert json.loads(data) == {"coalmine": 1, "baggage": f"coalmine={TOKEN}", "payload": payload}
    assert unwrap(data) == (payload, TOKEN)
    assert is_envelope(data)


def test_bytes_are_carried_as_base64() -> None:
    raw = b"\x00\x01binary\xff"
    data = wrap(raw, TOKEN)
    assert json.loads(data) == {
        "coalmine": 1,
        "baggage": f"coalmine={TOKEN}",
        "encoding": "base64",
        "payload": {"base64": base64.b64encode(raw).decode()},
    }
    assert unwrap(data) == (raw, TOKEN)
    assert unwrap(data.decode()) == (raw, TOKEN)  # str input too


def test_the_token_defaults_to_the_current_scope_and_may_be_absent() -> None:
    decision = Decision("shop", "shop-1", Channel.CANARY, {"api": "v2"}, Reason.COHORT)
    with use(decision, TOKEN):
        assert unwrap(wrap({"a": 1})) == ({"a": 1}, TOKEN)
    bare = wrap({"a": 1})
    assert json.loads(bare) == {"coalmine": 1, "payload": {"a": 1}}
    assert unwrap(bare) == ({"a": 1}, None)


@pytest.mark.parametrize(
    "data",
    [
        b"not json at all",
        b"\xff\xfe binary",
        b'{"order": 42}',
        b'{"coalmine": 2, "payload": 1}',
        b'{"coalmine": true, "payload": 1}',
        b'{"coalmine": 1}',
        b"[1, 2]",
        b'{"coalmine": 1, "payload": {"base64": "!!"}, "encoding": "base64"}',
        b"",
    ],
)
def test_anything_else_passes_through_unchanged(data: bytes) -> None:
    assert unwrap(data) == (data, None)
    assert not is_envelope(data)


def test_a_dict_that_looks_like_base64_stays_a_dict() -> None:
    payload = {"base64": "AAAA"}
    assert unwrap(wrap(payload, TOKEN)) == (payload, TOKEN)


def test_payloads_that_cannot_be_carried_are_refused() -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        wrap({"when": object()}, TOKEN)
    with pytest.raises(TypeError, match="give bytes, a str, a dict or a list"):
        wrap(42, TOKEN)  # type: ignore[arg-type]
