"""SQLAlchemy 2 models of the control plane's durable state.

Times are Unix seconds (float) so that durable timers compare with the
controller's clock directly. Every release row carries ``row_version`` for
optimistic concurrency: two writers of one release never both win.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ACTIVE_PHASE_VALUES",
    "AlarmRow",
    "AnalysisRunRow",
    "AppRow",
    "Base",
    "EventRow",
    "FunctionRow",
    "MetricWindowRow",
    "ReleaseRow",
    "ServerSecretRow",
    "TokenRow",
    "VersionRow",
    "WebhookDeliveryRow",
]

ACTIVE_PHASE_VALUES = ("pending", "running", "paused", "promoting", "rolling_back")
"""Phases in which a release still owns its app (the one-active-release rule)."""
_ACTIVE_SQL = "phase IN (" + ",".join(f"'{p}'" for p in ACTIVE_PHASE_VALUES) + ")"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012


class AppRow(Base):
    __tablename__ = "apps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """release defaults (strategy, route mode, hooks, analysis) and event webhooks"""
    revision: Mapped[int] = mapped_column(Integer, default=0)
    """bumped by every change the data plane must see; the routing ETag"""
    created_at: Mapped[float] = mapped_column(Float)


class FunctionRow(Base):
    __tablename__ = "functions"
    __table_args__ = (UniqueConstraint("app_id", "name", name="uq_functions_app_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(63))
    current_version: Mapped[str | None] = mapped_column(String(64), default=None)
    """the version everyone runs outside a release"""
    created_at: Mapped[float] = mapped_column(Float)


class VersionRow(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("function_id", "name", name="uq_versions_function_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    function_id: Mapped[int] = mapped_column(
        ForeignKey("functions.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class ReleaseRow(Base):
    __tablename__ = "releases"
    __table_args__ = (
        Index(
            "uq_releases_one_active_per_app",
            "app_id",
            unique=True,
            sqlite_where=text(_ACTIVE_SQL),
            postgresql_where=text(_ACTIVE_SQL),
        ),
    )

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    app_id: Mapped[int] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    """1, 2, 3... per app"""
    phase: Mapped[str] = mapped_column(String(16))
    route_mode: Mapped[str] = mapped_column(String(16))
    salt: Mapped[str] = mapped_column(String(64))
    strategy: Mapped[dict[str, Any]] = mapped_column()
    baseline: Mapped[dict[str, Any]] = mapped_column()
    candidate: Mapped[dict[str, Any]] = mapped_column()
    targeting: Mapped[dict[str, Any]] = mapped_column(default=dict)
    hooks: Mapped[dict[str, Any]] = mapped_column(default=dict)
    analysis: Mapped[dict[str, Any]] = mapped_column(default=dict)
    exposure: Mapped[int] = mapped_column(Integer, default=0)
    step: Mapped[int] = mapped_column(Integer, default=-1)
    next_action_at: Mapped[float | None] = mapped_column(Float, default=None, index=True)
    paused_remaining: Mapped[float | None] = mapped_column(Float, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_by: Mapped[str] = mapped_column(String(120), default="")
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    """when users first reached the candidate: the judge's window starts here"""
    row_version: Mapped[int] = mapped_column(Integer, default=1)
    lambda_alias: Mapped[str | None] = mapped_column(String(128), default=None)
    """the Lambda alias the controller keeps true (the app's release.lambda_alias at start)"""

    __mapper_args__ = {"version_id_col": row_version}  # noqa: RUF012


class EventRow(Base):
    """The audit log: who did what to which release, when and why."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(String(63), index=True)
    release_id: Mapped[str | None] = mapped_column(String(80), index=True, default=None)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    phase: Mapped[str | None] = mapped_column(String(16), default=None)
    exposure: Mapped[int | None] = mapped_column(Integer, default=None)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class TokenRow(Base):
    """API tokens (admin, deployer, viewer) and per-app SDK keys, stored hashed."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(16))
    app: Mapped[str | None] = mapped_column(String(63), default=None)
    """for SDK keys: the one app they may read"""
    prefix: Mapped[str] = mapped_column(String(16))
    """the first characters, to recognise a token in listings"""
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, default=None)


class ServerSecretRow(Base):
    """Secrets the control plane makes for itself and every replica shares (the signing keys of
    routing contexts): read by admins only, never by a narrower key."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class AnalysisRunRow(Base):
    """One interval's analysis of a release: the judge's verdict, alarms, and what followed."""

    __tablename__ = "analysis_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    release_id: Mapped[str] = mapped_column(
        ForeignKey("releases.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[float] = mapped_column(Float)
    window_start: Mapped[float] = mapped_column(Float)
    window_end: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    """pass, fail or inconclusive: the worst of its functions' verdicts and alarms"""
    results: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """per-function verdicts, alarm evaluations and the tracker's state after this run"""
    action: Mapped[str] = mapped_column(String(16))
    """continue, pause or rollback"""
    applied: Mapped[bool] = mapped_column(Boolean, default=True)
    """False while the run's rollback or pause is still to be carried out"""


class AlarmRow(Base):
    """The last known state of an outside alarm of an app (raised over HTTP)."""

    __tablename__ = "alarms"
    __table_args__ = (UniqueConstraint("app", "name", name="uq_alarms_app_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(8))
    """ALARM or OK"""
    reason: Mapped[str] = mapped_column(Text, default="")
    since: Mapped[float] = mapped_column(Float)
    """when the alarm entered its current state"""
    updated_at: Mapped[float] = mapped_column(Float)
    reported_release: Mapped[str | None] = mapped_column(String(80), default=None)
    """the release a firing-before-the-release report was written for (once each)"""


class MetricWindowRow(Base):
    """The merged counts of one function version in one channel over one time window.

    SDKs and gateways flush deltas (`coalmine.metrics`); the control plane
    merges each into the row of its key and window (read-modify-write, the
    row locked on PostgreSQL), so every metric stays per version (the
    analysis compares canary with stable on these).
    """

    __tablename__ = "metric_windows"
    __table_args__ = (
        UniqueConstraint(
            "app", "function", "version", "channel", "start", name="uq_metric_windows_key"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    app: Mapped[str] = mapped_column(String(63))
    function: Mapped[str] = mapped_column(String(63))
    version: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16))
    start: Mapped[float] = mapped_column(Float)
    """the window's start, Unix seconds, aligned to the window size (10 s by default)"""
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    """at most `coalmine.core.histogram.MAX_COUNT` (2^53 - 1): ingestion checks the sum"""
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    histogram: Mapped[dict[str, Any]] = mapped_column()
    """a `LatencyHistogram` in its JSON form (``to_dict``)"""


class WebhookDeliveryRow(Base):
    """The outbox of event webhooks: one release event to one webhook, until it is sent.

    Written in the transaction that writes its event, so no event is told
    that was not stored and none stored is forgotten by a restart; the
    sender (`coalmine.controller.webhooks`) claims it with a lease, and marks
    it ``delivered`` or, after its attempts or its age ran out, ``given_up``.
    """

    __tablename__ = "webhook_deliveries"
    # the sender reads the pending rows only (they are few; delivered ones pile up)
    __table_args__ = (Index("ix_webhook_deliveries_state_id", "state", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    """json, slack or teams (`coalmine.core.webhook.WebhookFormat`)"""
    state: Mapped[str] = mapped_column(String(16))
    """pending, delivered or given_up"""
    created_at: Mapped[float] = mapped_column(Float)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    """attempts begun (counted when claimed, so a sender that dies mid-send counts too)"""
    next_at: Mapped[float] = mapped_column(Float)
    """not tried again before this time (the backoff)"""
    lease_until: Mapped[float | None] = mapped_column(Float, default=None)
    """a sender is sending it until then; no other sender takes it meanwhile"""
    claimed_by: Mapped[str | None] = mapped_column(String(32), default=None)
    done_at: Mapped[float | None] = mapped_column(Float, default=None)
    """when it was delivered or given up"""
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
