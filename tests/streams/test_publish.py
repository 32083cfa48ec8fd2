"""publish: the context in the baggage header, or in the envelope where there are no headers."""

from __future__ import annotations

import json

import pytest

from coalmine.core import Channel, Decision, Reason
from coalmine.integrations import MemoryStream
from coalmine.sdk import unwrap, use
from coalmine.sdk.publish import encode_payload, publish

DECISION = Decision("shop", "r1", Channel.CANARY, {"a": "v2"}, Reason.COHORT)


def one(stream: MemoryStream) -> tuple[bytes, dict[str, str] | None, str | None]:
    (record,) = stream.records("t")
    headers = dict(record.headers) if record.headers is not None else None
    return record.data, headers, record.key


def test_headers_carry_the_context_the_user_and_the_content_type() -> None:
    s = MemoryStream()
    publish(s, "t", {"order_id": "o-1"}, key="alice", token="tok.en")
    data, headers, key = one(s)
    assert data == b'{"order_id":"o-1"}'
    assert key == "alice"
    assert headers == {
        "content-type": "application/json",
        "coalmine-user": "alice",
        "baggage": "coalmine=tok.en",
    }


def test_the_token_defaults_to_the_current_scope() -> None:
    s = MemoryStream()
    with use(DECISION, "scoped.token"):
        publish(s, "t", "hello")
    data, headers, key = one(s)
    assert (data, key) == (b"hello", None)
    assert headers == {
        "content-type": "text/plain; charset=utf-8",
        "baggage": "coalmine=scoped.token",
    }


def test_without_a_context_nothing_is_claimed() -> None:
    s = MemoryStream()
    publish(s, "t", b"\x00raw", headers={"baggage": "vendor=1", "x-trace": "abc"})
    data, headers, _ = one(s)
    assert data == b"\x00raw"
    assert headers == {"baggage": "vendor=1", "x-trace": "abc"}


def test_other_baggage_members_are_kept() -> None:
    s = MemoryStream()
    publish(s, "t", b"", headers={"baggage": "vendor=1"}, token="tok")
    _, headers, _ = one(s)
    assert headers is not None
    assert headers["baggage"] == "vendor=1,coalmine=tok"


def test_without_headers_the_record_is_the_exact_envelope() -> None:
    s = MemoryStream(supports_headers=False)
    publish(s, "t", {"order_id": "o-1"}, key="alice", token="tok.en")
    data, headers, key = one(s)
    assert headers is None
    assert key == "alice"
    assert data == (
        b'{"coalmine":1,"baggage":"coalmine=tok.en","user":"alice","payload":{"order_id":"o-1"}}'
    )
    assert unwrap(data) == ({"order_id": "o-1"}, "tok.en")


def test_the_envelope_without_context_or_key_still_wraps() -> None:
    s = MemoryStream(supports_headers=False)
    publish(s, "t", b"\x01\x02")
    data, _, key = one(s)
    assert key is None
    assert json.loads(data) == {"coalmine": 1, "encoding": "base64", "payload": {"base64": "AQI="}}


def test_headers_are_refused_without_header_support() -> None:
    with pytest.raises(ValueError, match="no record headers: cannot send x-trace"):
        publish(MemoryStream(supports_headers=False), "t", {}, headers={"x-trace": "1"})


@pytest.mark.parametrize("bad", [object(), 3, {"x": object()}])
def test_unpublishable_payloads_are_type_errors(bad: object) -> None:
    with pytest.raises(TypeError):
        publish(MemoryStream(), "t", bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        publish(MemoryStream(supports_headers=False), "t", bad)  # type: ignore[arg-type]


def test_encode_payload() -> None:
    assert encode_payload({"é": 1}) == ('{"é":1}'.encode(), "application/json")
    assert encode_payload([1]) == (b"[1]", "application/json")
    assert encode_payload("é") == ("é".encode(), "text/plain; charset=utf-8")
    assert encode_payload(bytearray(b"x")) == (b"x", None)
