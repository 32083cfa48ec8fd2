"""An event webhook as an app configures it: where, in which message format, for which events.

``release.webhooks`` holds each webhook as a URL (the generic JSON format,
told of every release event, as it always was) or as an object
``{url, format, events}``; `Webhook.of` reads either stored form. A chat
format (Slack, Teams) is told, by default, only of what people in a channel
want to read (`CHAT_EVENTS`); ``events`` names the kinds explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from coalmine.core.machine import EventKind

__all__ = ["CHAT_EVENTS", "RELEASE_EVENTS", "Webhook", "WebhookFormat"]


class WebhookFormat(StrEnum):
    JSON = "json"
    """the event as JSON (`EventRead`), for programs"""
    SLACK = "slack"
    """a Slack incoming-webhook message (``text`` and Block Kit ``blocks``)"""
    TEAMS = "teams"
    """a Microsoft Teams message holding an Adaptive Card (incoming webhooks, Workflows)"""


RELEASE_EVENTS: frozenset[str] = frozenset(str(k) for k in EventKind)
"""every kind of event a release writes: what ``events`` may name"""

CHAT_EVENTS: frozenset[str] = frozenset(
    str(k)
    for k in (
        EventKind.STARTED,
        EventKind.STEP,
        EventKind.PAUSED,
        EventKind.RESUMED,
        EventKind.PROMOTED,
        EventKind.ROLLED_BACK,
        EventKind.FAILED,
    )
)
"""what a chat webhook is told of unless it names its ``events``"""


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    format: WebhookFormat = WebhookFormat.JSON
    events: frozenset[str] | None = None
    """the event kinds it is told of; None: the format's default"""

    @classmethod
    def of(cls, entry: object) -> Webhook:
        """A stored ``release.webhooks`` entry (a URL, or a mapping with ``url``);
        raises ValueError for anything else."""
        if isinstance(entry, str):
            return cls(entry)
        if not isinstance(entry, Mapping) or not isinstance(entry.get("url"), str):
            raise ValueError(f"a webhook is a URL or an object with a url, not a {type(entry)}")
        events = entry.get("events")
        return cls(
            entry["url"],
            WebhookFormat(entry.get("format") or WebhookFormat.JSON),
            None if events is None else frozenset(str(e) for e in events),
        )

    def wants(self, kind: str) -> bool:
        """Whether an event of ``kind`` is sent to this webhook."""
        if self.events is not None:
            return kind in self.events
        return self.format is WebhookFormat.JSON or kind in CHAT_EVENTS
