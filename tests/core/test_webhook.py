"""A configured webhook: either stored form reads back to the same webhook, and which events
it is told of follows its format unless it names them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coalmine.core.machine import EventKind
from coalmine.core.webhook import CHAT_EVENTS, RELEASE_EVENTS, Webhook, WebhookFormat

kinds = st.sampled_from(sorted(RELEASE_EVENTS))
formats = st.sampled_from(list(WebhookFormat))
urls = st.from_regex(r"https?://[a-z0-9.-]{1,30}(/[!-~]{0,40})?", fullmatch=True)
webhooks = st.builds(Webhook, urls, formats, st.none() | st.frozensets(kinds, min_size=1))


@given(webhooks)
def test_the_stored_object_reads_back_the_same(webhook: Webhook) -> None:
    stored = {
        "url": webhook.url,
        "format": str(webhook.format),
        "events": None if webhook.events is None else sorted(webhook.events),
    }
    assert Webhook.of(stored) == webhook


@given(urls, kinds)
def test_a_plain_url_is_json_told_of_every_release_event(url: str, kind: str) -> None:
    webhook = Webhook.of(url)
    assert webhook == Webhook(url, WebhookFormat.JSON, None)
    assert webhook.wants(kind)


@given(webhooks, kinds)
def test_who_is_told_of_what(webhook: Webhook, kind: str) -> None:
    if webhook.events is not None:
        expected = kind in webhook.events
    else:
        expected = webhook.format is WebhookFormat.JSON or kind in CHAT_EVENTS
    assert webhook.wants(kind) is expected


def test_a_chat_is_told_of_steps_and_outcomes_not_of_every_analysis() -> None:
    slack = Webhook("https://hooks.slack.com/x", WebhookFormat.SLACK)
    told = {str(k) for k in EventKind if slack.wants(k)}
    assert told == {
        "started",
        "step",
        "paused",
        "resumed",
        "promoted",
        "rolled_back",
        "failed",
    }


@pytest.mark.parametrize(
    "entry",
    [
        None,
        5,
        ["https://x"],
        {"format": "slack"},
        {"url": 5},
        {"url": "https://x", "format": "irc"},
    ],
)
def test_an_unreadable_entry_is_a_value_error(entry: object) -> None:
    with pytest.raises(ValueError, match=r"webhook|WebhookFormat|valid"):
        Webhook.of(entry)
