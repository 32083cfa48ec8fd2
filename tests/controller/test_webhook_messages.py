"""The messages each webhook format sends: within Slack's and Teams' limits for any text, a
chat's control characters escaped, the reason shown only where it is the event's own."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.controller.schemas import EventRead
from coalmine.controller.webhook_messages import (
    SLACK_HEADER_LIMIT,
    SLACK_TEXT_LIMIT,
    message,
    slack_message,
    teams_message,
)
from coalmine.core.machine import EventKind
from coalmine.core.records import EventRecord
from coalmine.core.webhook import WebhookFormat

TEAMS_PAYLOAD_LIMIT = 28 * 1024
"""bytes Teams takes in one webhook message"""


def event(
    kind: str = "rolled_back", message: str = "m", reason: str | None = "r", **kw: Any
) -> EventRecord:
    fields: dict[str, Any] = {
        "id": 7,
        "app": "shop",
        "release_id": "shop-3",
        "at": 1_700_000_000.0,
        "actor": "controller",
        "kind": kind,
        "message": message,
        "phase": "rolled_back",
        "exposure": 0,
        "data": {} if reason is None else {"reason": reason},
    }
    return EventRecord(**(fields | kw))


def mrkdwn_texts(body: dict[str, Any]) -> list[str]:
    out = []
    for block in body["blocks"]:
        if isinstance(block.get("text"), dict) and block["text"]["type"] == "mrkdwn":
            out.append(block["text"]["text"])
        out += [f["text"] for f in block.get("fields", [])]
        out += [e["text"] for e in block.get("elements", [])]
    return out


texts = st.text(st.characters(codec="utf-8"), max_size=5000)


@given(
    kind=st.sampled_from([str(k) for k in EventKind]),
    text=texts,
    reason=texts,
    actor=st.text(max_size=300),
)
def test_slack_messages_keep_within_slacks_limits_and_escape_its_markup(
    kind: str, text: str, reason: str, actor: str
) -> None:
    body = slack_message(event(kind, text, reason, actor=actor))
    header = body["blocks"][0]["text"]["text"]
    assert len(header) <= SLACK_HEADER_LIMIT
    assert len(body["text"]) <= SLACK_TEXT_LIMIT
    for block in body["blocks"]:
        assert len(block.get("fields", [])) <= 10
    for mrkdwn in mrkdwn_texts(body):
        assert len(mrkdwn) <= SLACK_TEXT_LIMIT
        unquoted = re.sub(r"^>", "", mrkdwn, flags=re.M)
        assert "<" not in unquoted
        assert ">" not in unquoted
        assert re.search(r"&(?!amp;|lt;|gt;)", unquoted) is None
    assert "<" not in body["text"]
    json.dumps(body)


@given(kind=st.sampled_from([str(k) for k in EventKind]), text=texts, reason=texts)
def test_teams_messages_are_one_adaptive_card_within_teams_size(
    kind: str, text: str, reason: str
) -> None:
    body = teams_message(event(kind, text, reason))
    assert len(json.dumps(body).encode()) < TEAMS_PAYLOAD_LIMIT
    (attachment,) = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["content"]["type"] == "AdaptiveCard"


def test_markup_in_a_reason_cannot_ping_a_channel_or_forge_a_link() -> None:
    body = slack_message(event(reason="<!channel> & <https://evil.example|click here>"))
    assert body["blocks"][1]["text"]["text"] == (
        "*Reason*\n>&lt;!channel&gt; &amp; &lt;https://evil.example|click here&gt;"
    )


def test_a_reason_of_several_lines_is_quoted_whole() -> None:
    body = slack_message(event(reason="p99 doubled\non place-order"))
    assert body["blocks"][1]["text"]["text"] == "*Reason*\n>p99 doubled\n>on place-order"


@pytest.mark.parametrize("kind", ["paused", "rolling_back", "rolled_back", "failed"])
def test_the_reason_comes_right_after_the_title(kind: str) -> None:
    slack = slack_message(event(kind, reason="waiting for the on-call"))
    assert slack["blocks"][1]["text"]["text"] == "*Reason*\n>waiting for the on-call"
    assert slack["text"].endswith(": waiting for the on-call")
    teams = teams_message(event(kind, reason="waiting for the on-call"))["attachments"][0]
    container = teams["content"]["body"][1]
    assert container["type"] == "Container"
    assert container["items"][1]["text"] == "waiting for the on-call"


def test_a_promotion_after_a_pause_shows_no_stale_reason() -> None:
    """A release promoted from a pause keeps the pause's reason in its record."""
    e = event("promoted", "promoted: the candidate versions are now stable", "on-call away")
    assert "Reason" not in json.dumps(slack_message(e))
    assert "Reason" not in json.dumps(teams_message(e))


def test_a_long_reason_is_cut_with_an_ellipsis() -> None:
    body = slack_message(event(reason="x" * 10_000))
    quoted = body["blocks"][1]["text"]["text"]
    assert quoted.endswith("x…")
    assert len(quoted) < SLACK_TEXT_LIMIT


def test_the_json_format_is_the_event_as_the_api_reads_it() -> None:
    e = event("step", "exposure 10% -> 50%", None, phase="running", exposure=5000)
    assert message("json", e) == EventRead.of(e).model_dump(mode="json")
    assert message(WebhookFormat.SLACK, e) == slack_message(e)
    with pytest.raises(ValueError, match="irc"):
        message("irc", e)
