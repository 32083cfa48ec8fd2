"""`event_json` renders exactly the JSON of `build_event`'s event, for any request."""

from __future__ import annotations

import json
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from coalmine.core.model import Channel, Decision, Reason
from coalmine.core.ports import Call
from coalmine.gateway.asgi import json_body
from coalmine.gateway.event import RequestIds, build_event, event_json

DECISION = Decision("shop", "r1", Channel.CANARY, {"fn": "v2"}, Reason.COHORT)
_latin1 = st.text(st.characters(max_codepoint=255, blacklist_categories=("Cs",)), max_size=12)
_names = st.sampled_from(
    [b"host", b"x-forwarded-host", b"cookie", b"user-agent", b"baggage", b"x-a", b"X-A"]
)
_headers = st.lists(st.tuples(_names, _latin1.map(lambda s: s.encode("latin-1"))), max_size=8)


def _call(
    method: str, path: str, rest: bytes, query: bytes, headers: list[tuple[bytes, bytes]]
) -> Call:
    async def receive() -> dict[str, object]:  # pragma: no cover - never read here
        return {"type": "http.disconnect"}

    return Call(
        target="lambda:fn:2",
        function="fn",
        version="v2",
        decision=DECISION,
        method=method,
        path=path,
        raw_rest=rest,
        query=query,
        headers=headers,
        receive=receive,
        has_body=True,
    )


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    path=st.text(max_size=20).map(lambda s: "/fn/" + s),
    rest=_latin1.map(lambda s: s.encode("latin-1")),
    query=st.sampled_from([b"", b"a=1", b"a=1&a=2&b=", b"x=%C3%A9&y", b"%ff=%00"]),
    headers=_headers,
    body=st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode)),
    now=st.floats(min_value=0, max_value=4e9),
    source_ip=st.sampled_from(["", "127.0.0.1", "::1"]),
)
def test_event_json_is_the_events_json(
    method: str,
    path: str,
    rest: bytes,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    now: float,
    source_ip: str,
) -> None:
    call = _call(method, path, rest, query, headers)
    event = build_event(call, body, request_id="rid-1", now=now, source_ip=source_ip)
    rendered = event_json(call, body, request_id="rid-1", now=now, source_ip=source_ip)
    assert rendered == json_body(event)
    assert json.loads(rendered) == event


def test_request_ids_are_uuid_shaped_and_unique() -> None:
    ids, other = RequestIds(), RequestIds()
    seen = {ids.next() for _ in range(1000)} | {other.next() for _ in range(1000)}
    assert len(seen) == 2000
    assert all(str(uuid.UUID(i)) == i for i in seen)
