"""The in-process SDK: routing kept in sync with the control plane, decided locally.

Function code makes one `Client` per process and asks it for decisions;
carriers, the Kinesis envelope and the httpx/requests instrumentation move
the signed routing context along the chain. See docs/sdk.md.

Only the standard library, ``coalmine.core``, mmh3 and httpx are imported
here: this package is part of the base install.
"""

from coalmine.sdk.aws_carriers import (
    extract_eventbridge,
    extract_sns,
    extract_sqs,
    inject_eventbridge,
    inject_sns,
    inject_sqs,
)
from coalmine.sdk.aws_instrument import instrument_messaging
from coalmine.sdk.batch_router import route_batch
from coalmine.sdk.carriers import (
    HEADER,
    extract_http,
    extract_kafka,
    extract_message,
    inject_http,
    inject_kafka,
    inject_message,
)
from coalmine.sdk.client import Client, Context
from coalmine.sdk.dispatch import (
    DispatchResult,
    RecordOutcome,
    RecordStatus,
    RouteReason,
    consume_and_dispatch,
    dispatch,
)
from coalmine.sdk.envelope import ENVELOPE_VERSION, is_envelope, unwrap, wrap
from coalmine.sdk.forward import ForwardedError, route_lambda
from coalmine.sdk.handler import (
    RecordDecision,
    UserKey,
    decide_event,
    decide_records,
    event_context,
    handler,
    record_context,
    record_decisions,
)
from coalmine.sdk.instrument import instrument_httpx, is_instrumented, uninstrument_httpx
from coalmine.sdk.invoke import instrument_lambda, uninstrument_lambda
from coalmine.sdk.keys import SIGNING_KEYS_ENV, keyring_from_env
from coalmine.sdk.publish import publish
from coalmine.sdk.records import kinesis_event_records, read_record
from coalmine.sdk.refresh import InvocationSync
from coalmine.sdk.router import Router, StaticRouter
from coalmine.sdk.scope import Scope, current_decision, current_scope, current_token, use
from coalmine.sdk.sync import ChangeCallback, RoutingSync, SyncStatus

__all__ = [
    "ENVELOPE_VERSION",
    "HEADER",
    "SIGNING_KEYS_ENV",
    "ChangeCallback",
    "Client",
    "Context",
    "DispatchResult",
    "ForwardedError",
    "InvocationSync",
    "RecordDecision",
    "RecordOutcome",
    "RecordStatus",
    "RouteReason",
    "Router",
    "RoutingSync",
    "Scope",
    "StaticRouter",
    "SyncStatus",
    "UserKey",
    "consume_and_dispatch",
    "current_decision",
    "current_scope",
    "current_token",
    "decide_event",
    "decide_records",
    "dispatch",
    "event_context",
    "extract_eventbridge",
    "extract_http",
    "extract_kafka",
    "extract_message",
    "extract_sns",
    "extract_sqs",
    "handler",
    "inject_eventbridge",
    "inject_http",
    "inject_kafka",
    "inject_message",
    "inject_sns",
    "inject_sqs",
    "instrument_httpx",
    "instrument_lambda",
    "instrument_messaging",
    "is_envelope",
    "is_instrumented",
    "keyring_from_env",
    "kinesis_event_records",
    "publish",
    "read_record",
    "record_context",
    "record_decisions",
    "route_batch",
    "route_lambda",
    "uninstrument_httpx",
    "uninstrument_lambda",
    "unwrap",
    "use",
    "wrap",
]
