"""Wire schemas of the control plane: what the REST API reads and returns.

Names follow ``XCreate`` (input) / ``XRead`` (output). Input models forbid
unknown fields so a typo is a 422 that names the field, not a silent no-op.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    Tag,
    TypeAdapter,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from coalmine.core.alias import validate_alias_name
from coalmine.core.machine import EventKind
from coalmine.core.model import (
    NAME_PATTERN,
    TARGET_PATTERN,
    VERSION_PATTERN,
    parse_lambda_function,
    unqualified_lambda_function,
)
from coalmine.core.records import (
    AlarmRecord,
    AlarmState,
    AnalysisRunRecord,
    EventRecord,
    HookConfig,
    ReleaseRecord,
)
from coalmine.core.text import text_problem
from coalmine.core.webhook import WebhookFormat

__all__ = [
    "REDACTED",
    "LATEST_PUBLISHED",
    "PUBLISHED",
    "AlarmHandled",
    "AlarmRead",
    "AnalysisRunRead",
    "AppRead",
    "AppSpec",
    "ApplyRead",
    "EventRead",
    "FunctionRead",
    "FunctionSpec",
    "HookSpec",
    "InputModel",
    "MetricWindowIn",
    "MetricsBatch",
    "MetricsIngestRead",
    "OperateRequest",
    "ReleaseCreate",
    "ReleaseRead",
    "ReleaseSettings",
    "Role",
    "StepRead",
    "TargetingSpec",
    "SigningKeysRead",
    "TokenCreate",
    "TokenCreated",
    "TokenRead",
    "VersionCreate",
    "VersionRead",
    "WebhookSpec",
    "redacted_webhook_url",
]

Role = Literal["admin", "deployer", "viewer", "sdk", "browser", "scraper"]
PUBLISHED = "published"
"""``versions: published``: a function's versions are its Lambda function's published ones"""
LATEST_PUBLISHED = "latest-published"
"""a release candidate: the newest published version of the function's Lambda function"""
REDACTED = "<redacted>"
"""what reads show for a hook header's value (it may be a credential)"""
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
_HTTP_URL = re.compile(r"https?://[^\s/?#]+\S*", re.IGNORECASE)
_HTTP_URL_RULE = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+\S*$"
"""_HTTP_URL as a JSON Schema pattern (no flags there)"""
# pydantic searches a pattern anywhere in the value: anchor it
_NAME = f"^{NAME_PATTERN.pattern}$"
NAME_RULE = _NAME
"""an app's or function's name, as a JSON Schema pattern"""
_VERSION = f"^{VERSION_PATTERN.pattern}$"


_VERSION_MAP = TypeAdapter(dict[str, str])


def _analysis_switch(value: object) -> object:
    """``analysis: off`` / ``false`` (YAML reads ``off`` as false) is ``{"enabled": false}``."""
    if value is False or value == "off":
        return {"enabled": False}
    return value


class InputModel(BaseModel):
    """Base of every input schema: an unknown field is a 422 that names it, and every
    string in the input, dict keys included and however deep, must be text that can be
    stored (`coalmine.core.text`): a 422 naming the field, before anything is written.

    ``_free_text`` names the fields that are free text (tab and newline allowed).
    """

    model_config = ConfigDict(extra="forbid")
    _free_text: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Publish the storable-text rule: a pattern on every string this model checks."""
        schema = handler(core_schema)
        resolved = handler.resolve_ref_schema(schema)
        for name, prop in resolved.get("properties", {}).items():
            _publish_text(prop, free=name in cls._free_text)
        return schema

    @model_validator(mode="after")
    def _storable_text(self) -> Self:
        for name in type(self).model_fields:
            _check_stored(getattr(self, name), name, free=name in self._free_text)
        return self


def _check_stored(value: object, where: str, *, free: bool) -> None:
    """Refuse a string in ``value`` that cannot be stored; nested models check themselves."""
    if isinstance(value, str):
        problem = text_problem(value, free=free)
        if problem is not None:
            raise ValueError(f"{where}: {problem}")
    elif isinstance(value, BaseModel):
        return
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                _check_stored(key, f"{where}: the key {key!r}", free=False)
            _check_stored(item, f"{where}[{key!r}]", free=free)
    elif isinstance(value, list | tuple | set | frozenset):
        for i, item in enumerate(value):
            _check_stored(item, f"{where}[{i}]", free=free)


STORABLE_TEXT = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
"""`coalmine.core.text`'s rule as a JSON Schema pattern: no control character"""
FREE_TEXT = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$"
"""the same, tab and newline allowed"""


def _publish_text(schema: dict[str, Any], *, free: bool) -> None:
    """Add the storable-text pattern to every string (and dict key) ``schema`` accepts."""
    if "$ref" in schema:
        return  # a nested InputModel publishes its own
    for key in ("anyOf", "oneOf", "allOf"):
        for part in schema.get(key, ()):
            _publish_text(part, free=free)
    kind = schema.get("type")
    rule = FREE_TEXT if free else STORABLE_TEXT
    if kind == "string" and "enum" not in schema and "const" not in schema:
        own = schema.get("pattern")
        # a field's own pattern may allow what cannot be stored (\S allows U+0085): both hold
        schema["pattern"] = rule if own is None else f"(?={rule}){own}"
    elif kind == "array" and isinstance(schema.get("items"), dict):
        _publish_text(schema["items"], free=free)
    elif kind == "object":
        schema.setdefault("propertyNames", {"pattern": STORABLE_TEXT})
        if isinstance(schema.get("additionalProperties"), dict):
            _publish_text(schema["additionalProperties"], free=free)


_In = InputModel


class HookSpec(_In):
    """A lifecycle hook: an HTTP webhook (``url``) or a Lambda function (``lambda``).

    A ``url`` hook fails on a non-2xx answer; a ``lambda`` hook, invoked
    synchronously with the same JSON as its event, fails on a function error
    or an answer ``{"status": "Failed"}``. Either fails on a timeout or an
    error once its retries are spent.
    """

    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    lambda_function: str | None = Field(
        default=None,
        alias="lambda",
        description="a Lambda function name or ARN, optionally :QUALIFIER (instead of url)",
    )
    timeout: float = Field(default=10.0, gt=0, le=300, description="seconds per attempt")
    retries: int = Field(default=2, ge=0, le=10, description="extra attempts after a failure")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="sent with a url hook; their values are shown as " + repr(REDACTED),
    )

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(
                    f"header name {name!r} is not a token (letters, digits and !#$%&'*+-.^_`|~)"
                )
            if any(c in text for c in "\r\n\0"):
                raise ValueError(f"header {name}: a value may not hold CR, LF or NUL")
        return value

    def redacted(self) -> HookSpec:
        """The hook as viewers read it: header names kept, their values (credentials) not."""
        return self.model_copy(update={"headers": dict.fromkeys(self.headers, REDACTED)})

    @model_validator(mode="after")
    def _one_target(self) -> HookSpec:
        if (self.url is None) == (self.lambda_function is None):
            raise ValueError(
                "a hook needs exactly one of url (an HTTP endpoint) and lambda (a function)"
            )
        if self.lambda_function is not None:
            parse_lambda_function(self.lambda_function, "lambda")
            if self.headers:
                raise ValueError("headers go with a url hook; a lambda hook takes none")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``url`` or ``lambda``, never both with one null: the stored form of older releases."""
        data: dict[str, Any] = handler(self)
        data.pop("lambda_function", None)
        data.pop("lambda", None)
        if self.url is None:
            data.pop("url", None)
            data = {"lambda": self.lambda_function, **data}
        return data

    def config(self) -> HookConfig:
        return HookConfig(
            self.url,
            self.timeout,
            self.retries,
            dict(self.headers),
            lambda_function=self.lambda_function,
        )

    @classmethod
    def of(cls, hook: HookConfig) -> HookSpec:
        return cls.model_validate(hook.to_dict())


class TargetingSpec(_In):
    always_canary: list[str] = Field(
        default_factory=list, max_length=10_000, description="user keys that run the candidate"
    )
    never_canary: list[str] = Field(
        default_factory=list, max_length=10_000, description="user keys that keep the baseline"
    )


class WebhookSpec(_In):
    """An event webhook with a message format (a plain URL is one of format ``json``).

    ``json`` POSTs each event as the API returns it; ``slack`` and ``teams``
    POST a chat message (a Slack incoming-webhook message; a Teams message
    holding an Adaptive Card). ``events`` names the kinds told; by default
    every release event for ``json``, and started, step, paused, resumed,
    promoted, rolled_back and failed for a chat.
    """

    url: str = Field(max_length=2048, json_schema_extra={"pattern": _HTTP_URL_RULE})
    format: WebhookFormat = WebhookFormat.JSON
    events: list[EventKind] | None = Field(default=None, min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not _HTTP_URL.fullmatch(value):
            raise ValueError(f"a webhook is an http:// or https:// URL, got {value!r}")
        return value


def redacted_webhook_url(url: str) -> str:
    """``url`` as the API shows it: its scheme, host and port, then ``/…`` (no credentials,
    path or query: an incoming webhook's secret is in those)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "https://invalid/…"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}{f':{port}' if port else ''}/…"


def _webhook_form(value: object) -> str:
    return "url" if isinstance(value, str) else "object"


class ReleaseSettings(_In):
    """Defaults for releases of an app (each release may override them)."""

    strategy: str | list[Any] | dict[str, Any] = Field(
        default="Canary10Percent5Minutes",
        description="a CodeDeploy preset name, a step list such as '10%:5m, 50%:10m, 100%',"
        " or its list / mapping form (strategies.md)",
    )
    route_mode: Literal["user", "request"] = Field(
        default="user",
        description="user: a user keeps one version for the whole release; request: each"
        " request is split on its own, as an alias weight does",
    )
    hooks: dict[Literal["before_allow_traffic", "after_allow_traffic"], HookSpec] = Field(
        default_factory=dict,
        description="before_allow_traffic runs before the first user sees a candidate,"
        " after_allow_traffic when every user does, before the promotion (CodeDeploy's names);"
        " a hook that fails every attempt rolls the release back",
    )
    analysis: dict[str, Any] = Field(
        default_factory=dict,
        description="automatic rollback: the judge's metrics, alarms and thresholds"
        ' (analysis.md); empty: the judge\'s defaults, {"enabled": false}: no analysis',
    )
    _free_text = frozenset({"analysis"})  # a PromQL query may span lines

    @field_validator("analysis", mode="before")
    @classmethod
    def _analysis_off(cls, value: object) -> object:
        return _analysis_switch(value)

    webhooks: list[
        Annotated[
            # published for clients; _webhooks refuses with a sentence that says what to fix
            Annotated[str, Field(json_schema_extra={"pattern": _HTTP_URL_RULE}), Tag("url")]
            | Annotated[WebhookSpec, Tag("object")],
            Discriminator(_webhook_form),
        ]
    ] = Field(
        default_factory=list,
        description="where release events are told (started, step, promoted, rolled back):"
        " an http(s) URL (the event as JSON), or {url, format: json|slack|teams, events}",
    )

    @field_validator("webhooks")
    @classmethod
    def _webhooks(cls, value: list[str | WebhookSpec]) -> list[str | WebhookSpec]:
        for url in value:
            if isinstance(url, str) and not _HTTP_URL.fullmatch(url):
                raise ValueError(f"a webhook is an http:// or https:// URL, got {url!r}")
        return value

    lambda_alias: str | None = Field(
        default=None,
        description="the Lambda alias (SAM's AutoPublishAlias, e.g. 'live') coalmine keeps true"
        " for every changed function whose versions are Lambda versions",
    )

    def redacted(self) -> ReleaseSettings:
        """The settings as the API shows them: hook header values left out, and each event
        webhook's URL cut to its scheme and host (Slack's and Teams' incoming-webhook URLs
        are their credential). Stored whole, and sent to whole."""
        webhooks = [
            redacted_webhook_url(w)
            if isinstance(w, str)
            else w.model_copy(update={"url": redacted_webhook_url(w.url)})
            for w in self.webhooks
        ]
        return self.model_copy(
            update={"hooks": {k: h.redacted() for k, h in self.hooks.items()}, "webhooks": webhooks}
        )

    @field_validator("lambda_alias")
    @classmethod
    def _lambda_alias(cls, value: str | None) -> str | None:
        return None if value is None else validate_alias_name(value)


class VersionCreate(_In):
    name: str = Field(pattern=_VERSION)
    target: str = Field(
        min_length=1, max_length=2048, json_schema_extra={"pattern": TARGET_PATTERN}
    )


class FunctionSpec(_In):
    versions: dict[str, str] | Literal["published"] = Field(
        default_factory=dict,
        description="version name -> target; or `published`: every published version of"
        " `lambda_function`, named by its number, its qualified ARN as the target",
    )
    lambda_function: str | None = Field(
        default=None,
        description="with `versions: published`: the Lambda function (a name, or an"
        " unqualified ARN) whose published versions to register",
    )
    current: str | None = Field(
        default=None,
        description="the version everyone runs outside a release, set when the function is"
        " created; with `version` it is only that starting point, afterwards releases move it",
    )
    version: str | None = Field(
        default=None,
        description="the version the file wants running (GitOps): when it differs from the"
        " running one, apply starts a release to it with the `release:` settings; applied"
        " again after the promotion it changes nothing",
    )

    @field_validator("versions", mode="wrap")
    @classmethod
    def _versions(cls, value: object, _handler: ValidatorFunctionWrapHandler) -> object:
        """The mapping or the word, each with its own errors (not a union's two lists)."""
        if isinstance(value, str):
            if value != PUBLISHED:
                raise ValueError(
                    f"versions is a mapping of version name to target, or the word"
                    f" {PUBLISHED!r}; got {value!r}"
                )
            return value
        return _VERSION_MAP.validate_python(value)

    @model_validator(mode="after")
    def _published_needs_a_function(self) -> FunctionSpec:
        if self.versions == PUBLISHED:
            if self.lambda_function is None:
                raise ValueError(
                    "versions: published needs lambda_function: the Lambda function (its name"
                    " or unqualified ARN) whose published versions to register"
                )
            unqualified_lambda_function(self.lambda_function, "lambda_function")
        elif self.lambda_function is not None:
            raise ValueError(
                "lambda_function goes with versions: published; with a mapping of versions,"
                " drop it (each version's target names its Lambda version)"
            )
        return self


class AppSpec(_In):
    """A `coalmine.yaml` document: an app, its functions and versions, release settings."""

    app: str = Field(pattern=_NAME)
    functions: dict[str, FunctionSpec] = Field(default_factory=dict)
    release: ReleaseSettings = Field(default_factory=ReleaseSettings)

    @field_validator("functions")
    @classmethod
    def _function_names(cls, value: dict[str, FunctionSpec]) -> dict[str, FunctionSpec]:
        for name in value:
            if not NAME_PATTERN.fullmatch(name):
                raise ValueError(
                    f"invalid function name {name!r}: use lowercase letters, digits, '-' or '_'"
                )
        return value


class ReleaseCreate(_In):
    """Start a release: the candidate versions, and settings over the app's defaults."""

    candidate: dict[str, str] = Field(
        min_length=1,
        description="function -> version for each function that changes; the version"
        f" {LATEST_PUBLISHED!r} is the newest published version of the function's Lambda"
        " function (registered if it is not yet)",
    )
    strategy: str | list[Any] | dict[str, Any] | None = None
    route_mode: Literal["user", "request"] | None = None
    targeting: TargetingSpec = Field(default_factory=TargetingSpec)
    hooks: dict[Literal["before_allow_traffic", "after_allow_traffic"], HookSpec] | None = None
    analysis: dict[str, Any] | None = None
    _free_text = frozenset({"analysis"})  # a PromQL query may span lines

    @field_validator("analysis", mode="before")
    @classmethod
    def _analysis_off(cls, value: object) -> object:
        return _analysis_switch(value)


class OperateRequest(_In):
    _free_text = frozenset({"reason"})
    reason: str = Field(default="", max_length=2000)


class VersionRead(BaseModel):
    name: str
    target: str
    created_at: float


class FunctionRead(BaseModel):
    name: str
    current_version: str | None
    versions: list[VersionRead]


class AppRead(BaseModel):
    name: str
    revision: int
    created_at: float
    settings: ReleaseSettings
    functions: list[FunctionRead]
    active_release: str | None = None


class StepRead(BaseModel):
    index: int
    exposure: int
    hold: float


class ReleaseRead(BaseModel):
    id: str
    app: str
    phase: str
    route_mode: str
    exposure: int
    step: int
    steps: list[StepRead]
    strategy: str
    baseline: dict[str, str]
    candidate: dict[str, str]
    changed: list[str]
    targeting: TargetingSpec
    hooks: dict[str, HookSpec]
    analysis: dict[str, Any]
    next_action_at: float | None
    reason: str | None
    lambda_alias: str | None = None
    created_by: str
    created_at: float
    updated_at: float
    finished_at: float | None
    row_version: int

    @classmethod
    def of(cls, r: ReleaseRecord) -> ReleaseRead:
        strategy = r.strategy
        return cls(
            id=r.id,
            app=r.app,
            phase=str(r.phase),
            route_mode=str(r.route_mode),
            exposure=r.exposure,
            step=r.step,
            steps=[
                StepRead(index=i, exposure=st.exposure, hold=st.hold)
                for i, st in enumerate(strategy.steps)
            ],
            strategy=strategy.name if strategy.name != "custom" else strategy.describe(),
            baseline=dict(r.baseline),
            candidate=dict(r.candidate),
            changed=r.changed,
            targeting=TargetingSpec(
                always_canary=sorted(r.targeting.always_canary),
                never_canary=sorted(r.targeting.never_canary),
            ),
            hooks={str(k): HookSpec.of(v).redacted() for k, v in r.hooks.items()},
            analysis=dict(r.analysis),
            next_action_at=r.next_action_at,
            reason=r.reason,
            lambda_alias=r.lambda_alias,
            created_by=r.created_by,
            created_at=r.created_at,
            updated_at=r.updated_at,
            finished_at=r.finished_at,
            row_version=r.row_version,
        )


class EventRead(BaseModel):
    id: int
    app: str
    release_id: str | None
    at: float
    actor: str
    kind: str
    message: str
    phase: str | None
    exposure: int | None
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, e: EventRecord) -> EventRead:
        return cls(
            id=e.id,
            app=e.app,
            release_id=e.release_id,
            at=e.at,
            actor=e.actor,
            kind=e.kind,
            message=e.message,
            phase=e.phase,
            exposure=e.exposure,
            data=dict(e.data),
        )


class ApplyRead(BaseModel):
    app: str
    changed: bool
    changes: list[str]
    dry_run: bool = False
    release: str | None = Field(
        default=None,
        description="the release this apply started (would start, on a dry run), or the active"
        " one already moving the app to the file's `version`s",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="what a person should know that is not a change: a release in progress"
        " to the file's versions, or file versions not released again after a rollback",
    )


class SigningKeysRead(BaseModel):
    """The keyring discovery signs routing contexts with (``GET /v1/signing-keys``)."""

    keys: str = Field(
        description="`kid:secret[,kid:secret...]`, the first key active: the value to give"
        " gateways and SDKs as `env`"
    )
    active: str = Field(description="the id of the key that signs")
    env: str = Field(description="the environment variable gateways and SDKs read it from")


class TokenCreate(_In):
    # published: an sdk or browser key names its app, no other token does
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"role": {"enum": ["sdk", "browser"]}}, "required": ["role"]},
            "then": {"required": ["app"], "properties": {"app": {"type": "string"}}},
            "else": {"properties": {"app": {"type": "null"}}},
        },
    )
    name: str = Field(min_length=1, max_length=120)
    role: Role
    app: str | None = Field(
        default=None, pattern=_NAME, description="required for roles 'sdk' and 'browser'"
    )


class TokenRead(BaseModel):
    id: int
    name: str
    role: str
    app: str | None
    prefix: str
    created_at: float
    revoked_at: float | None


class TokenCreated(TokenRead):
    token: str = Field(description="the secret: shown once, stored only as a hash")


class AnalysisRunRead(BaseModel):
    """One interval's analysis of a release (``GET /v1/releases/{id}/analysis``)."""

    id: int
    release_id: str
    at: float
    window_start: float
    window_end: float
    outcome: str = Field(description="pass, fail or inconclusive: the worst of the run")
    action: str = Field(description="continue, pause or rollback")
    results: dict[str, Any] = Field(
        default_factory=dict,
        description="per-function verdicts, alarm evaluations, the tracker after the run",
    )

    @classmethod
    def of(cls, run: AnalysisRunRecord) -> AnalysisRunRead:
        return cls(
            id=run.id,
            release_id=run.release_id,
            at=run.at,
            window_start=run.window_start,
            window_end=run.window_end,
            outcome=str(run.outcome),
            action=str(run.action),
            results=dict(run.results),
        )


class AlarmRead(BaseModel):
    app: str
    name: str
    state: Literal["ALARM", "OK"]
    reason: str
    since: float = Field(description="when the alarm entered its current state")
    updated_at: float

    @classmethod
    def of(cls, a: AlarmRecord) -> AlarmRead:
        return cls(
            app=a.app,
            name=a.name,
            state="ALARM" if a.state is AlarmState.ALARM else "OK",
            reason=a.reason,
            since=a.since,
            updated_at=a.updated_at,
        )


class AlarmHandled(BaseModel):
    """The answer to ``POST /v1/alarms``: the alarm's state and what it did."""

    alarm: AlarmRead
    changed: bool = Field(description="whether the state changed")
    action: Literal["rolled_back", "not_attributed", "none"]
    release_id: str | None = None
    message: str


class MetricWindowIn(_In):
    """The counts of one function version in one channel over one window (a delta).

    Names, channel, counts and the histogram are checked by the service
    (`coalmine.metrics.MetricWindow.from_dict`): a bad value is a 400 that
    names the window and the problem.
    """

    start: float = Field(description="window start, Unix seconds, a multiple of the batch's window")
    function: str
    version: str
    channel: str = Field(description="stable or canary")
    requests: int
    errors: int
    histogram: dict[str, Any] = Field(
        description="a LatencyHistogram in its JSON form (coalmine.core.histogram)"
    )


class MetricsBatch(_In):
    """What an SDK or a gateway flushes to ``POST /v1/metrics``: deltas of one app."""

    app: str = Field(pattern=_NAME)
    window: float = Field(default=10.0, ge=1, le=3600, description="seconds per window")
    windows: list[MetricWindowIn] = Field(default_factory=list, max_length=1000)


class MetricsIngestRead(BaseModel):
    app: str
    merged: int = Field(description="windows merged into the store")
