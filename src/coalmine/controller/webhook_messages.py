"""What a webhook is sent for a release event, in each format (`coalmine.core.webhook`).

* ``json``: the event itself (`EventRead`), as the API returns it;
* ``slack``: an incoming-webhook message, ``{"text", "blocks"}`` (Block Kit):
  a header, the reason of a rollback or pause quoted under it, the event's
  message, the release's facts and who did it when; ``text`` is what a
  notification shows;
* ``teams``: a message with one Adaptive Card (version 1.2), the form Teams
  incoming webhooks and Workflows' "when a Teams webhook request is
  received" accept: a title, the reason in an attention-styled container, the
  message and a fact set.

Texts are cut to the limits these services enforce (Slack refuses a header
over 150 characters and a text over 3,000), and Slack's control characters
``& < >`` are escaped, so an event's text cannot ping a channel or forge a link.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from coalmine.controller.schemas import EventRead
from coalmine.core.machine import EventKind
from coalmine.core.records import EventRecord
from coalmine.core.webhook import WebhookFormat

__all__ = ["SLACK_HEADER_LIMIT", "SLACK_TEXT_LIMIT", "message", "slack_message", "teams_message"]

SLACK_HEADER_LIMIT = 150
SLACK_TEXT_LIMIT = 3000
_TEXT = 2000
"""characters of a message or reason shown (the rest is cut, with an ellipsis)"""

_TITLES: dict[str, tuple[str, str]] = {
    # kind: (Slack emoji, what happened to the release)
    EventKind.CREATED: (":new:", "created"),
    EventKind.STARTED: (":rocket:", "started"),
    EventKind.STEP: (":arrow_up:", "moved on"),
    EventKind.PAUSED: (":double_vertical_bar:", "paused"),
    EventKind.RESUMED: (":arrow_forward:", "resumed"),
    EventKind.PROMOTING: (":hourglass_flowing_sand:", "promoting"),
    EventKind.PROMOTED: (":white_check_mark:", "promoted"),
    EventKind.ROLLING_BACK: (":warning:", "rolling back"),
    EventKind.ROLLED_BACK: (":rotating_light:", "rolled back"),
    EventKind.FAILED: (":x:", "failed"),
}
_ALERTS = frozenset({EventKind.ROLLING_BACK, EventKind.ROLLED_BACK, EventKind.FAILED})
_REASONED = _ALERTS | {EventKind.PAUSED}
"""the kinds whose reason is theirs (a release promoted from a pause keeps the pause's)"""
_GOOD = frozenset({EventKind.PROMOTED})


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _title(e: EventRecord) -> str:
    what = _TITLES.get(e.kind, ("", e.kind.replace("_", " ")))[1]
    if e.exposure is not None and e.kind == EventKind.STARTED:
        what = f"started at {_percent(e.exposure)}"
    elif e.exposure is not None and e.kind == EventKind.STEP:
        what = f"moved to {_percent(e.exposure)}"
    return f"{e.app}: release {e.release_id} {what}"


def _percent(bp: int) -> str:
    return f"{bp / 100:g}%"


def _reason(e: EventRecord) -> str:
    """The reason of a rollback, pause or failure: what a channel must read first."""
    reason = e.data.get("reason")
    return reason if e.kind in _REASONED and isinstance(reason, str) else ""


def _when(e: EventRecord) -> str:
    return datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _facts(e: EventRecord) -> list[tuple[str, str]]:
    return [
        ("App", e.app),
        ("Release", e.release_id or "-"),
        ("Phase", e.phase or "-"),
        ("Exposure", _percent(e.exposure) if e.exposure is not None else "-"),
    ]


def slack_message(e: EventRecord) -> dict[str, Any]:
    """A Slack incoming-webhook message for ``e`` (see the module)."""
    emoji = _TITLES.get(e.kind, (":information_source:", ""))[0]
    title = _title(e)
    reason = _reason(e)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _cut(f"{emoji} {title}", SLACK_HEADER_LIMIT),
                "emoji": True,
            },
        }
    ]
    if reason:
        quoted = "\n".join(f">{line}" for line in _slack_escape(_cut(reason, _TEXT)).splitlines())
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason*\n{quoted}"}}
        )
    blocks.append(
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _slack_escape(_cut(e.message or e.kind, _TEXT))},
            "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{_slack_escape(_cut(value, 200))}"}
                for name, value in _facts(e)
            ],
        }
    )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _slack_escape(_cut(f"by {e.actor} at {_when(e)} (event {e.id})", 300)),
                }
            ],
        }
    )
    summary = f"{title}: {reason}" if reason else f"{title}: {e.message}"
    return {"text": _slack_escape(_cut(summary, SLACK_TEXT_LIMIT)), "blocks": blocks}


def teams_message(e: EventRecord) -> dict[str, Any]:
    """A Teams message with one Adaptive Card for ``e`` (see the module)."""
    reason = _reason(e)
    alert = e.kind in _ALERTS
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": _cut(_title(e), 300),
            "size": "Large",
            "weight": "Bolder",
            "wrap": True,
            "color": "Attention" if alert else "Good" if e.kind in _GOOD else "Default",
        }
    ]
    if reason:
        body.append(
            {
                "type": "Container",
                "style": "attention" if alert else "warning",
                "items": [
                    {"type": "TextBlock", "text": "Reason", "weight": "Bolder", "wrap": True},
                    {
                        "type": "TextBlock",
                        "text": _cut(reason, _TEXT),
                        "size": "Medium",
                        "weight": "Bolder",
                        "wrap": True,
                    },
                ],
            }
        )
    body.append({"type": "TextBlock", "text": _cut(e.message or e.kind, _TEXT), "wrap": True})
    facts = [*_facts(e), ("By", e.actor), ("At", _when(e)), ("Event", str(e.id))]
    body.append(
        {"type": "FactSet", "facts": [{"title": n, "value": _cut(v, 200)} for n, v in facts]}
    )
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.2",
        "body": body,
        "msteams": {"width": "Full"},
    }
    return {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": card,
            }
        ],
    }


def _json(e: EventRecord) -> dict[str, Any]:
    return EventRead.of(e).model_dump(mode="json")


_FORMATS: dict[WebhookFormat, Callable[[EventRecord], dict[str, Any]]] = {
    WebhookFormat.JSON: _json,
    WebhookFormat.SLACK: slack_message,
    WebhookFormat.TEAMS: teams_message,
}


def message(format: WebhookFormat | str, event: EventRecord) -> dict[str, Any]:
    """The JSON body sent to a webhook of ``format`` for ``event``; an unknown format raises
    ValueError."""
    return _FORMATS[WebhookFormat(format)](event)
