"""Messages sent with boto3 carry the current routing context: SQS, SNS and EventBridge.

`instrument_messaging(client)` registers botocore event hooks
(``before-parameter-build.sqs.SendMessage`` and the like) on one boto3
client, so that while a scope is active (`coalmine.sdk.use`) every
``send_message(_batch)``, ``publish(_batch)`` and ``put_events`` gets the
context through the carriers of `coalmine.sdk.aws_carriers`. A context the
caller set explicitly is kept; outside a scope nothing changes; a message
that has no room for it (SQS's 10 attributes) is sent without it, with a
warning. No boto3 import here: the hooks work on the client they are given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any, TypeVar

from coalmine.sdk.aws_carriers import inject_eventbridge, inject_sns, inject_sqs
from coalmine.sdk.scope import current_token

__all__ = ["instrument_messaging"]

log = logging.getLogger("coalmine.sdk")

C = TypeVar("C")
_Inject = Callable[..., MutableMapping[str, Any]]
_OPERATIONS: dict[str, tuple[tuple[str, _Inject], ...]] = {
    "sqs": (("SendMessage", inject_sqs), ("SendMessageBatch", inject_sqs)),
    "sns": (("Publish", inject_sns), ("PublishBatch", inject_sns)),
    "events": (("PutEvents", inject_eventbridge),),
}


def _hook(operation: str, inject: _Inject) -> Callable[..., None]:
    def add_context(params: MutableMapping[str, Any], **_: Any) -> None:
        token = current_token()
        if token is None:
            return
        try:
            inject(params, token, replace=False)
        except ValueError as exc:  # the message is sent as it is: the call must not fail
            log.warning("coalmine: %s goes without the routing context: %s", operation, exc)

    return add_context


def instrument_messaging(client: C) -> C:
    """Make ``client`` (a boto3 SQS, SNS or EventBridge client) carry the context; idempotent.

    Raises TypeError for a client of another service.
    """
    meta = getattr(client, "meta", None)
    service = getattr(getattr(meta, "service_model", None), "service_name", None)
    operations = _OPERATIONS.get(str(service))
    if meta is None or operations is None:
        raise TypeError(
            f"instrument_messaging takes a boto3 sqs, sns or events client, not {service!r}"
        )
    for operation, inject in operations:
        meta.events.register(
            f"before-parameter-build.{service}.{operation}",
            _hook(f"{service}.{operation}", inject),
            unique_id=f"coalmine-{service}-{operation}",
        )
    return client
