"""The control service: every read and write of apps, versions and releases.

Services own transactions (repositories never commit): each public method is
one unit of work, so a failure changes nothing. Every state change of a
release is one transaction that also writes an audit event, bumps the app's
routing revision and marks the change feed; optimistic concurrency
(``row_version``) makes two writers of one release never both win.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from coalmine.controller.alarms import AlarmState, alarm_actor, roll_back, validate_alarm_name
from coalmine.controller.alarms import decide as decide_alarm
from coalmine.controller.alarms import parse_state as parse_alarm_state
from coalmine.controller.analysis import release_analysis
from coalmine.controller.schemas import (
    AlarmHandled,
    AlarmRead,
    AnalysisRunRead,
    ApplyRead,
    AppRead,
    AppSpec,
    EventRead,
    FunctionRead,
    HookSpec,
    MetricsBatch,
    ReleaseCreate,
    ReleaseRead,
    ReleaseSettings,
    StepRead,
    TargetingSpec,
    VersionCreate,
    VersionRead,
)
from coalmine.core.bucketing import new_salt
from coalmine.core.errors import Conflict, InvalidInput, NotFound
from coalmine.core.histogram import LatencyHistogram, VersionMetrics
from coalmine.core.machine import (
    Command,
    Event,
    EventKind,
    Hook,
    Operator,
    Progress,
    Transition,
    start_progress,
    transition,
)
from coalmine.core.model import (
    Channel,
    Phase,
    Release,
    RouteMode,
    Target,
    Targeting,
    validate_name,
    validate_version_name,
)
from coalmine.core.routing import RoutingState
from coalmine.core.snapshot import RoutingSnapshot
from coalmine.core.strategy import parse_strategy
from coalmine.metrics.recorder import MetricWindow, Recorder
from coalmine.store.changes import ChangeFeed
from coalmine.store.db import Store
from coalmine.store.models import (
    ACTIVE_PHASE_VALUES,
    AlarmRow,
    AnalysisRunRow,
    AppRow,
    EventRow,
    FunctionRow,
    MetricWindowRow,
    ReleaseRow,
    VersionRow,
)

__all__ = ["ControlService", "EventSink", "Outcome"]

log = logging.getLogger(__name__)
EventSink = Callable[[EventRead, list[str]], None]
"""Told of each committed event with the app's webhook URLs (after commit)."""
_ROLLED_BACK_HISTORY = 10
_MAX_RELEASE_ID = 64  # a release id is a version-like name (core.model.VERSION_PATTERN)
_PENDING_EVENTS = "coalmine_pending_events"
_METRIC_CHUNK = 200  # metric windows per statement (bound parameters stay few)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A release after a transition, and the transition (what to do next)."""

    release: ReleaseRead
    transition: Transition


class ControlService:
    def __init__(
        self,
        store: Store,
        feed: ChangeFeed | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sinks: Iterable[EventSink] = (),
    ) -> None:
        self.store = store
        self.feed = feed
        self.clock = clock
        self.sinks = list(sinks)

    # -- plumbing ----------------------------------------------------------
    def _tx(self) -> AbstractContextManager[Session]:
        return self.store.transaction()

    def _app(self, s: Session, name: str, *, lock: bool = False) -> AppRow:
        """The app row; ``lock`` holds it until the commit (FOR NO KEY UPDATE on
        PostgreSQL: it serialises writers of the app's release state without
        blocking inserts that merely reference the app)."""
        q = select(AppRow).where(AppRow.name == name)
        row = s.scalar(q.with_for_update(key_share=True) if lock else q)
        if row is None:
            raise NotFound(f"no app named {name!r}")
        return row

    def _function(self, s: Session, app: AppRow, name: str) -> FunctionRow:
        row = s.scalar(
            select(FunctionRow).where(FunctionRow.app_id == app.id, FunctionRow.name == name)
        )
        if row is None:
            raise NotFound(f"app {app.name!r} has no function named {name!r}")
        return row

    def _release_row(self, s: Session, release_id: str) -> ReleaseRow:
        row = s.get(ReleaseRow, release_id)
        if row is None:
            raise NotFound(f"no release with id {release_id!r}")
        return row

    def _changed(self, s: Session, app: AppRow) -> None:
        # Incremented by the database, not from the value this transaction read: two
        # transactions changing one app must never commit the same revision (the ETag and
        # the SSE stream skip a revision they have seen, so a lost bump hides a change).
        app.revision = AppRow.revision + 1
        if self.feed is not None:
            self.feed.mark(s, app.name)

    def _event(
        self,
        s: Session,
        app: AppRow,
        actor: str,
        kind: EventKind | str,
        message: str,
        *,
        release: ReleaseRow | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> EventRow:
        row = EventRow(
            app=app.name,
            release_id=release.id if release is not None else None,
            at=self.clock(),
            actor=actor,
            kind=str(kind),
            message=message,
            phase=release.phase if release is not None else None,
            exposure=release.exposure if release is not None else None,
            data=dict(data or {}),
        )
        s.add(row)
        webhooks = list(ReleaseSettings.model_validate(app.settings).webhooks)
        s.info.setdefault(_PENDING_EVENTS, []).append((row, webhooks))
        return row

    def _flush_events(self, s: Session) -> list[tuple[EventRead, list[str]]]:
        s.flush()
        pending = s.info.pop(_PENDING_EVENTS, [])
        return [(_event_read(row), hooks) for row, hooks in pending]

    def _emit(self, events: list[tuple[EventRead, list[str]]]) -> None:
        for ev, hooks in events:
            for sink in self.sinks:
                try:
                    sink(ev, hooks)
                except Exception:
                    log.exception("event sink failed")

    # -- apps --------------------------------------------------------------
    def list_apps(self) -> list[AppRead]:
        with self._tx() as s:
            return [
                self._app_read(s, row) for row in s.scalars(select(AppRow).order_by(AppRow.name))
            ]

    def get_app(self, name: str) -> AppRead:
        with self._tx() as s:
            return self._app_read(s, self._app(s, name))

    def _app_read(self, s: Session, app: AppRow) -> AppRead:
        functions = []
        for fn in s.scalars(
            select(FunctionRow).where(FunctionRow.app_id == app.id).order_by(FunctionRow.name)
        ):
            versions = s.scalars(
                select(VersionRow).where(VersionRow.function_id == fn.id).order_by(VersionRow.id)
            )
            functions.append(
                FunctionRead(
                    name=fn.name,
                    current_version=fn.current_version,
                    versions=[
                        VersionRead(name=v.name, target=v.target, created_at=v.created_at)
                        for v in versions
                    ],
                )
            )
        active = self._active(s, app)
        return AppRead(
            name=app.name,
            revision=app.revision,
            created_at=app.created_at,
            settings=ReleaseSettings.model_validate(app.settings),
            functions=functions,
            active_release=active.id if active is not None else None,
        )

    def create_app(self, name: str, actor: str, settings: ReleaseSettings | None = None) -> AppRead:
        validate_name(name, "app")
        settings = settings or ReleaseSettings()
        _check_settings(settings)
        try:
            with self._tx() as s:
                if s.scalar(select(AppRow).where(AppRow.name == name)) is not None:
                    raise Conflict(f"app {name!r} already exists")
                app = AppRow(
                    name=name, settings=settings.model_dump(mode="json"), created_at=self.clock()
                )
                s.add(app)
                s.flush()
                self._event(s, app, actor, "app_created", f"app {name} created")
                self._changed(s, app)
                events = self._flush_events(s)
                out = self._app_read(s, app)
        except IntegrityError:
            raise Conflict(f"app {name!r} already exists") from None
        self._emit(events)
        return out

    def add_function(self, app_name: str, name: str, actor: str) -> AppRead:
        validate_name(name, "function")
        clash = f"app {app_name!r} already has a function named {name!r}"
        with _conflict_on_integrity_error(clash), self._tx() as s:
            app = self._app(s, app_name)
            self._add_function(s, app, name, actor)
            events = self._flush_events(s)
            out = self._app_read(s, app)
        self._emit(events)
        return out

    def _add_function(self, s: Session, app: AppRow, name: str, actor: str) -> FunctionRow:
        exists = s.scalar(
            select(FunctionRow).where(FunctionRow.app_id == app.id, FunctionRow.name == name)
        )
        if exists is not None:
            raise Conflict(f"app {app.name!r} already has a function named {name!r}")
        fn = FunctionRow(app_id=app.id, name=name, created_at=self.clock())
        s.add(fn)
        s.flush()
        self._event(s, app, actor, "function_added", f"function {name} added")
        self._changed(s, app)
        return fn

    def register_version(
        self, app_name: str, function: str, version: VersionCreate, actor: str
    ) -> VersionRead:
        validate_version_name(version.name)
        target = Target.parse(version.target)
        clash = f"version {version.name} of {function} was registered at the same time"
        with _conflict_on_integrity_error(clash), self._tx() as s:
            app = self._app(s, app_name)
            fn = self._function(s, app, function)
            row = self._register(s, app, fn, version.name, target, actor)
            out = VersionRead(name=row.name, target=row.target, created_at=row.created_at)
            events = self._flush_events(s)
        self._emit(events)
        return out

    def _register(
        self, s: Session, app: AppRow, fn: FunctionRow, name: str, target: Target, actor: str
    ) -> VersionRow:
        existing = s.scalar(
            select(VersionRow).where(VersionRow.function_id == fn.id, VersionRow.name == name)
        )
        if existing is not None:
            if existing.target == target.ref:
                raise Conflict(f"version {name} of {fn.name} is already registered")
            raise Conflict(
                f"version {name} of {fn.name} is registered with target {existing.target!r};"
                " versions are immutable: register the new build under a new version name"
            )
        row = VersionRow(function_id=fn.id, name=name, target=target.ref, created_at=self.clock())
        s.add(row)
        s.flush()
        self._event(
            s,
            app,
            actor,
            "version_registered",
            f"{fn.name} {name} -> {target.ref}",
            data={"function": fn.name, "version": name, "target": target.ref},
        )
        self._changed(s, app)
        return row

    def set_current(self, app_name: str, function: str, version: str, actor: str) -> AppRead:
        """Set the version a function runs outside a release (only with no active release)."""
        with self._tx() as s:
            app = self._app(s, app_name, lock=True)
            fn = self._function(s, app, function)
            self._set_current(s, app, fn, version, actor)
            events = self._flush_events(s)
            out = self._app_read(s, app)
        self._emit(events)
        return out

    def _set_current(
        self, s: Session, app: AppRow, fn: FunctionRow, version: str, actor: str
    ) -> None:
        if self._version(s, fn, version) is None:
            raise InvalidInput(f"version {version!r} of {fn.name} is not registered")
        active = self._active(s, app)
        if active is not None:
            raise Conflict(
                f"app {app.name!r} has an active release {active.id} ({active.phase});"
                " change current versions through releases"
            )
        fn.current_version = version
        self._event(
            s,
            app,
            actor,
            "current_set",
            f"{fn.name} now runs {version}",
            data={"function": fn.name, "version": version},
        )
        self._changed(s, app)

    def _version(self, s: Session, fn: FunctionRow, name: str) -> VersionRow | None:
        return s.scalar(
            select(VersionRow).where(VersionRow.function_id == fn.id, VersionRow.name == name)
        )

    # -- declarative apply ---------------------------------------------------
    def apply(self, spec: AppSpec, actor: str, *, dry_run: bool = False) -> ApplyRead:
        """Make the store hold what ``spec`` describes; applying twice changes nothing.

        Creates the app, functions and versions that are missing, sets each
        function's current version when it has none, and replaces the release
        settings. A version that exists with another target is an error
        (versions are immutable), as is changing a current version (that is
        what releases are for).
        """
        validate_name(spec.app, "app")
        _check_settings(spec.release)
        targets = {
            (fname, ver): Target.parse(ref)
            for fname, fs in spec.functions.items()
            for ver, ref in fs.versions.items()
        }
        for fname, fs in spec.functions.items():
            for ver in fs.versions:
                validate_version_name(ver)
            if fs.current is not None and fs.current not in fs.versions:
                raise InvalidInput(
                    f"function {fname}: current version {fs.current!r} is not among its versions"
                )
        changes: list[str] = []
        # another apply may create the same app, function or version at the same time
        retry = f"app {spec.app!r} was changed by someone else at the same time; apply again"
        with _conflict_on_integrity_error(retry), self._tx() as s:
            app = s.scalar(select(AppRow).where(AppRow.name == spec.app))
            if app is None:
                app = AppRow(name=spec.app, settings={}, created_at=self.clock())
                s.add(app)
                s.flush()
                changes.append(f"create app {spec.app}")
                self._event(s, app, actor, "app_created", f"app {spec.app} created by apply")
            settings = spec.release.model_dump(mode="json")
            if app.settings != settings:
                if app.settings:
                    changes.append("update release settings")
                    self._event(
                        s, app, actor, "settings_updated", "release settings updated by apply"
                    )
                app.settings = settings
            for fn_name, fs in sorted(spec.functions.items()):
                fn = s.scalar(
                    select(FunctionRow).where(
                        FunctionRow.app_id == app.id, FunctionRow.name == fn_name
                    )
                )
                if fn is None:
                    fn = self._add_function(s, app, fn_name, actor)
                    changes.append(f"create function {fn_name}")
                for ver, _ref in sorted(fs.versions.items()):
                    target = targets[fn_name, ver]
                    existing = self._version(s, fn, ver)
                    if existing is None:
                        self._register(s, app, fn, ver, target, actor)
                        changes.append(f"register {fn_name} {ver} -> {target.ref}")
                    elif existing.target != target.ref:
                        raise Conflict(
                            f"version {ver} of {fn_name} is registered with target"
                            f" {existing.target!r}, the file says {target.ref!r}; versions are"
                            " immutable: give the new build a new version name"
                        )
                if fs.current is not None and fn.current_version != fs.current:
                    if fn.current_version is None:
                        self._set_current(s, app, fn, fs.current, actor)
                        changes.append(f"set {fn_name} current version {fs.current}")
                    else:
                        raise Conflict(
                            f"function {fn_name} runs {fn.current_version}, the file says current"
                            f" {fs.current}: change running versions with a release"
                            f" (coalmine release start {spec.app} --set {fn_name}={fs.current})"
                        )
            if changes:
                self._changed(s, app)
            events = self._flush_events(s)
            if dry_run:
                s.rollback()
                events = []
        self._emit(events)
        return ApplyRead(app=spec.app, changed=bool(changes), changes=changes, dry_run=dry_run)

    # -- releases ------------------------------------------------------------
    def _active(self, s: Session, app: AppRow) -> ReleaseRow | None:
        return s.scalar(
            select(ReleaseRow).where(
                ReleaseRow.app_id == app.id, ReleaseRow.phase.in_(ACTIVE_PHASE_VALUES)
            )
        )

    def start_release(self, app_name: str, req: ReleaseCreate, actor: str) -> ReleaseRead:
        try:
            with self._tx() as s:
                app = self._app(s, app_name, lock=True)
                active = self._active(s, app)
                if active is not None:
                    raise Conflict(
                        f"app {app_name!r} already has an active release {active.id}"
                        f" ({active.phase}); promote or roll it back first"
                    )
                defaults = ReleaseSettings.model_validate(app.settings)
                current: dict[str, str] = {}
                for fn in s.scalars(select(FunctionRow).where(FunctionRow.app_id == app.id)):
                    if fn.current_version is not None:
                        current[fn.name] = fn.current_version
                    elif fn.name in req.candidate:
                        raise InvalidInput(
                            f"function {fn.name} has no current version yet: set one"
                            " (current: in coalmine.yaml) before releasing a candidate"
                        )
                for fn_name, ver in req.candidate.items():
                    fn = self._function(s, app, fn_name)
                    if self._version(s, fn, ver) is None:
                        raise InvalidInput(
                            f"version {ver!r} of {fn_name} is not registered; register it first"
                        )
                strategy = parse_strategy(
                    req.strategy if req.strategy is not None else defaults.strategy
                )
                hooks = req.hooks if req.hooks is not None else defaults.hooks
                analysis = req.analysis if req.analysis is not None else defaults.analysis
                release_analysis(analysis)
                route_mode = RouteMode(req.route_mode or defaults.route_mode)
                seq = (
                    s.scalar(select(func.max(ReleaseRow.seq)).where(ReleaseRow.app_id == app.id))
                    or 0
                ) + 1
                release = Release.start(
                    id=_release_id(app.name, seq),
                    app=app.name,
                    current=current,
                    changes=req.candidate,
                    salt=new_salt(),
                    strategy=strategy,
                    route_mode=route_mode,
                    targeting=Targeting(
                        frozenset(req.targeting.always_canary),
                        frozenset(req.targeting.never_canary),
                    ),
                )
                now = self.clock()
                p = start_progress(now)
                row = ReleaseRow(
                    id=release.id,
                    app_id=app.id,
                    seq=seq,
                    phase=str(p.phase),
                    route_mode=str(route_mode),
                    salt=release.salt,
                    strategy=strategy.to_dict(),
                    baseline=dict(release.baseline),
                    candidate=dict(release.candidate),
                    targeting=req.targeting.model_dump(),
                    hooks={k: v.model_dump(mode="json") for k, v in hooks.items()},
                    analysis=dict(analysis),
                    exposure=p.exposure,
                    step=p.step,
                    next_action_at=p.next_action_at,
                    created_by=actor,
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
                s.flush()
                changed = ", ".join(
                    f"{fn} {release.baseline[fn]}->{release.candidate[fn]}"
                    for fn in release.changed_functions
                )
                self._event(
                    s,
                    app,
                    actor,
                    EventKind.CREATED,
                    f"release {row.id} created: {changed}; strategy {strategy.name} ({strategy.describe()})",
                    release=row,
                )
                self._changed(s, app)
                events = self._flush_events(s)
                out = _release_read(row, app.name)
        except IntegrityError:
            raise Conflict(
                f"app {app_name!r} already has an active release (started concurrently)"
            ) from None
        self._emit(events)
        return out

    def get_release(self, release_id: str) -> ReleaseRead:
        with self._tx() as s:
            row = self._release_row(s, release_id)
            return _release_read(row, self._app_name(s, row))

    def _app_name(self, s: Session, row: ReleaseRow) -> str:
        name = s.scalar(select(AppRow.name).where(AppRow.id == row.app_id))
        assert name is not None
        return name

    def list_releases(self, app: str | None = None, *, limit: int = 50) -> list[ReleaseRead]:
        with self._tx() as s:
            q = select(ReleaseRow, AppRow.name).join(AppRow, AppRow.id == ReleaseRow.app_id)
            if app is not None:
                q = q.where(AppRow.id == self._app(s, app).id)
            q = q.order_by(ReleaseRow.created_at.desc(), ReleaseRow.seq.desc()).limit(limit)
            return [_release_read(row, name) for row, name in s.execute(q)]

    def active_release(self, app: str) -> ReleaseRead | None:
        with self._tx() as s:
            app_row = self._app(s, app)
            row = self._active(s, app_row)
            return _release_read(row, app) if row is not None else None

    def operate(
        self, release_id: str, command: Command, actor: str, reason: str = ""
    ) -> ReleaseRead:
        """An operator's promote / rollback / pause / resume (409 if the phase forbids it)."""
        outcome = self._apply_event(release_id, Operator(command, self.clock(), reason), actor)
        assert outcome is not None  # operator commands always transition or raise
        return outcome.release

    def advance(self, release_id: str, event: Event, actor: str = "controller") -> Outcome | None:
        """Feed the state machine a tick or a hook result; None when nothing changed."""
        return self._apply_event(release_id, event, actor)

    def _apply_event(self, release_id: str, event: Event, actor: str) -> Outcome | None:
        try:
            with self._tx() as s:
                row = self._release_row(s, release_id)
                app = s.get(AppRow, row.app_id)
                assert app is not None
                strategy = parse_strategy(row.strategy)
                hooks = frozenset(Hook(h) for h in row.hooks)
                deadline = max(
                    (_hook_deadline(HookSpec.model_validate(h)) for h in row.hooks.values()),
                    default=300.0,
                )
                t = transition(strategy, hooks, _progress(row), event, hook_deadline=deadline)
                if t is None:
                    return None
                now = self.clock()
                p = t.progress
                routing_changed = (p.phase, p.exposure) != (Phase(row.phase), row.exposure)
                row.phase = str(p.phase)
                row.step = p.step
                row.exposure = p.exposure
                row.next_action_at = p.next_action_at
                row.paused_remaining = p.paused_remaining
                row.reason = p.reason
                row.updated_at = now
                if p.phase is Phase.PROMOTED:
                    row.finished_at = now
                    for fn in s.scalars(select(FunctionRow).where(FunctionRow.app_id == app.id)):
                        if fn.name in row.candidate:
                            fn.current_version = row.candidate[fn.name]
                elif p.phase is Phase.ROLLED_BACK:
                    row.finished_at = now
                s.flush()
                self._event(
                    s,
                    app,
                    actor,
                    t.kind,
                    t.message,
                    release=row,
                    data={"reason": p.reason} if p.reason else None,
                )
                if routing_changed:
                    self._changed(s, app)
                events = self._flush_events(s)
                out = Outcome(_release_read(row, app.name), t)
        except StaleDataError:
            raise Conflict(
                f"release {release_id} was changed by someone else at the same time; try again"
            ) from None
        self._emit(events)
        return out

    def record(
        self,
        release_id: str,
        kind: str,
        message: str,
        actor: str,
        data: Mapping[str, Any] | None = None,
    ) -> EventRead:
        """Write an audit event about a release without changing it (analysis, alarms)."""
        with self._tx() as s:
            row = self._release_row(s, release_id)
            app = s.get(AppRow, row.app_id)
            assert app is not None
            self._event(s, app, actor, kind, message, release=row, data=data)
            events = self._flush_events(s)
        self._emit(events)
        return events[0][0]

    def due_releases(self, now: float) -> list[str]:
        """Ids of releases whose timer has come (oldest first)."""
        with self._tx() as s:
            q = (
                select(ReleaseRow.id)
                .where(ReleaseRow.next_action_at.is_not(None), ReleaseRow.next_action_at <= now)
                .order_by(ReleaseRow.next_action_at)
            )
            return list(s.scalars(q))

    def next_due_at(self) -> float | None:
        with self._tx() as s:
            due: float | None = s.scalar(select(func.min(ReleaseRow.next_action_at)))
            return due

    # -- events -------------------------------------------------------------
    def events(
        self,
        *,
        app: str | None = None,
        release_id: str | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[EventRead]:
        with self._tx() as s:
            q = select(EventRow).where(EventRow.id > after)
            if app is not None:
                self._app(s, app)
                q = q.where(EventRow.app == app)
            if release_id is not None:
                self._release_row(s, release_id)
                q = q.where(EventRow.release_id == release_id)
            q = q.order_by(EventRow.id).limit(limit)
            return [_event_read(row) for row in s.scalars(q)]

    # -- data plane ---------------------------------------------------------
    def revision(self, app: str) -> int:
        with self._tx() as s:
            return self._app(s, app).revision

    def routing_snapshot(self, app_name: str) -> RoutingSnapshot:
        with self.store.snapshot() as s:
            app = self._app(s, app_name)
            fns = list(s.scalars(select(FunctionRow).where(FunctionRow.app_id == app.id)))
            versions = {fn.name: fn.current_version for fn in fns if fn.current_version}
            targets: dict[str, dict[str, str]] = {}
            for fn in fns:
                targets[fn.name] = {
                    v.name: v.target
                    for v in s.scalars(select(VersionRow).where(VersionRow.function_id == fn.id))
                }
            rows = list(
                s.scalars(
                    select(ReleaseRow)
                    .where(ReleaseRow.app_id == app.id)
                    .order_by(ReleaseRow.seq.desc())
                    .limit(_ROLLED_BACK_HISTORY + 1)
                )
            )
            latest = rows[0] if rows else None
            rolled_back = {
                r.id: dict(r.baseline)
                for r in rows[1:]
                if r.phase in ("rolled_back", "rolling_back", "failed")
            }
            release = _core_release(latest, app.name) if latest is not None else None
            state = RoutingState(app.name, versions, release, rolled_back)
            return RoutingSnapshot(state, app.revision, targets)

    # -- per-version metrics --------------------------------------------------
    @property
    def ingested(self) -> Recorder:
        """Cumulative totals of the metric windows this process ingested (for ``/metrics``)."""
        recorder: Recorder | None = self.__dict__.get("_ingested")
        if recorder is None:
            recorder = self.__dict__.setdefault("_ingested", Recorder(deltas=False))
        return recorder

    def ingest_metrics(self, app: str, batch: MetricsBatch, actor: str) -> int:
        """Merge a batch of metric windows (deltas an SDK or gateway flushed) into the store.

        Every window is validated first (names, channel, a finite start aligned
        to the batch's window, counts, the histogram): a bad one is an
        `InvalidInput` naming it, and nothing is written. Each window is then
        added to the row of its (app, function, version, channel, start),
        created if missing, read and rewritten inside one transaction with the
        rows locked (FOR UPDATE on PostgreSQL; SQLite serialises writers), so
        two batches for one window add up exactly. Not idempotent: a batch
        sent twice counts twice. Returns the number of windows merged.
        """
        validate_name(app, "app")
        if batch.app != app:
            raise InvalidInput(f"the batch is of app {batch.app!r}, not {app!r}")
        windows = self._metric_windows(app, batch)
        merged: dict[tuple[str, str, str, float], VersionMetrics] = {}
        for w in windows:
            key = (w.metrics.function, w.metrics.version, str(w.metrics.channel), w.start)
            if key in merged:
                merged[key].merge(w.metrics)
            else:
                merged[key] = w.metrics.copy()
        keys = sorted(merged)  # one lock order for every writer: no deadlocks
        with self._tx() as s:
            self._app(s, app)
            for i in range(0, len(keys), _METRIC_CHUNK):
                chunk = keys[i : i + _METRIC_CHUNK]
                for row in self._metric_rows(s, app, chunk):
                    key = (row.function, row.version, row.channel, row.start)
                    total = VersionMetrics(
                        app,
                        row.function,
                        row.version,
                        cast(Channel, row.channel),
                        row.requests,
                        row.errors,
                        LatencyHistogram.from_dict(row.histogram),
                    )
                    total.merge(merged[key])
                    row.requests = total.requests
                    row.errors = total.errors
                    row.histogram = total.histogram.to_dict()
        for w in windows:
            self.ingested.add(w)
        log.debug("%s: %d metric windows of %s merged", actor, len(windows), app)
        return len(windows)

    @staticmethod
    def _metric_windows(app: str, batch: MetricsBatch) -> list[MetricWindow]:
        layout = LatencyHistogram()
        out = []
        for i, data in enumerate(batch.windows):
            try:
                w = MetricWindow.from_dict(app, data.model_dump())
                if not (w.start / batch.window).is_integer():
                    raise InvalidInput(
                        f"start {w.start!r} is not aligned to the batch's {batch.window:g} s window"
                    )
                if not w.metrics.histogram.same_layout(layout):
                    raise InvalidInput(
                        "the control plane keeps histograms with alpha"
                        f" {layout.alpha}, min_value {layout.min_value} and max_buckets"
                        f" {layout.max_buckets}; this one has {w.metrics.histogram.alpha},"
                        f" {w.metrics.histogram.min_value} and {w.metrics.histogram.max_buckets}"
                    )
            except InvalidInput as exc:
                raise InvalidInput(f"windows[{i}]: {exc}") from None
            out.append(w)
        return out

    @staticmethod
    def _metric_rows(
        s: Session, app: str, keys: list[tuple[str, str, str, float]]
    ) -> list[MetricWindowRow]:
        """The rows of ``keys`` (created empty if missing), locked until the commit."""
        empty = LatencyHistogram().to_dict()
        insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
        s.execute(
            insert(MetricWindowRow)
            .values(
                [
                    {
                        "app": app,
                        "function": function,
                        "version": version,
                        "channel": channel,
                        "start": start,
                        "requests": 0,
                        "errors": 0,
                        "histogram": empty,
                    }
                    for function, version, channel, start in keys
                ]
            )
            .on_conflict_do_nothing()
        )
        q = (
            select(MetricWindowRow)
            .where(
                MetricWindowRow.app == app,
                tuple_(
                    MetricWindowRow.function,
                    MetricWindowRow.version,
                    MetricWindowRow.channel,
                    MetricWindowRow.start,
                ).in_(keys),
            )
            .order_by(MetricWindowRow.id)
            .with_for_update()
        )
        return list(s.scalars(q))

    def metrics_for(
        self,
        app: str,
        function: str,
        version: str,
        channel: str,
        *,
        since: float,
        until: float | None = None,
    ) -> VersionMetrics:
        """The merged windows of one version in one channel whose start is in [since, until).

        An empty `VersionMetrics` when there are none (or the app is unknown).
        """
        out = VersionMetrics(app, function, version, cast(Channel, channel))  # validates
        for what, value in (("since", since), ("until", until)):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise InvalidInput(f"{what} must be finite Unix seconds, got {value!r}")
        q = select(
            MetricWindowRow.requests, MetricWindowRow.errors, MetricWindowRow.histogram
        ).where(
            MetricWindowRow.app == app,
            MetricWindowRow.function == function,
            MetricWindowRow.version == version,
            MetricWindowRow.channel == str(out.channel),
            MetricWindowRow.start >= since,
        )
        if until is not None:
            q = q.where(MetricWindowRow.start < until)
        with self._tx() as s:
            rows = s.execute(q.order_by(MetricWindowRow.start)).all()
        for requests, errors, histogram in rows:
            out.merge(
                VersionMetrics(
                    app,
                    function,
                    version,
                    out.channel,
                    requests,
                    errors,
                    LatencyHistogram.from_dict(histogram),
                )
            )
        return out

    # -- analysis runs and alarms ---------------------------------------------
    def active_releases(self) -> list[ReleaseRead]:
        """Every release that still owns its app (pending to rolling back), oldest first."""
        with self._tx() as s:
            q = (
                select(ReleaseRow, AppRow.name)
                .join(AppRow, AppRow.id == ReleaseRow.app_id)
                .where(ReleaseRow.phase.in_(ACTIVE_PHASE_VALUES))
                .order_by(ReleaseRow.created_at, ReleaseRow.id)
            )
            return [_release_read(row, name) for row, name in s.execute(q)]

    def record_analysis_run(
        self,
        release_id: str,
        *,
        window_start: float,
        window_end: float,
        outcome: str,
        action: str,
        results: Mapping[str, Any],
        message: str,
        actor: str = "judge",
        at: float | None = None,
    ) -> AnalysisRunRead:
        """Store one analysis run and its ``analysis`` audit event in one transaction."""
        with self._tx() as s:
            row = self._release_row(s, release_id)
            app = s.get(AppRow, row.app_id)
            assert app is not None
            run = AnalysisRunRow(
                release_id=row.id,
                at=self.clock() if at is None else at,
                window_start=window_start,
                window_end=window_end,
                outcome=outcome,
                results=dict(results),
                action=action,
            )
            s.add(run)
            s.flush()
            ev = self._event(
                s,
                app,
                actor,
                EventKind.ANALYSIS,
                message,
                release=row,
                data={"run": run.id, "outcome": outcome, "action": action},
            )
            s.flush()
            run.results = {**run.results, "event_id": ev.id}
            events = self._flush_events(s)
            out = _run_read(run)
        self._emit(events)
        return out

    def list_analysis_runs(
        self, release_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[AnalysisRunRead]:
        """A release's analysis runs, oldest first."""
        with self._tx() as s:
            self._release_row(s, release_id)
            q = (
                select(AnalysisRunRow)
                .where(AnalysisRunRow.release_id == release_id, AnalysisRunRow.id > after)
                .order_by(AnalysisRunRow.id)
                .limit(limit)
            )
            return [_run_read(run) for run in s.scalars(q)]

    def last_analysis_run(self, release_id: str) -> AnalysisRunRead | None:
        with self._tx() as s:
            run = s.scalar(
                select(AnalysisRunRow)
                .where(AnalysisRunRow.release_id == release_id)
                .order_by(AnalysisRunRow.id.desc())
                .limit(1)
            )
            return _run_read(run) if run is not None else None

    def raise_alarm(
        self, app_name: str, name: str, state: str, reason: str, actor: str
    ) -> AlarmHandled:
        """Record an alarm's state; a transition to ALARM during a release rolls it back.

        An alarm that was already firing when the app's active release was
        created is reported on the release and does not roll it back (see
        `coalmine.controller.alarms.decide`).
        """
        name = validate_alarm_name(name)
        the_state = parse_alarm_state(state)
        with self._tx() as s:
            app = self._app(s, app_name, lock=True)
            now = self.clock()
            row = s.scalar(select(AlarmRow).where(AlarmRow.app == app.name, AlarmRow.name == name))
            changed = row is None or row.state != the_state
            if row is None:
                row = AlarmRow(app=app.name, name=name, since=now)
                s.add(row)
            elif changed:
                row.since = now
            row.state = str(the_state)
            row.reason = reason
            row.updated_at = now
            s.flush()
            alarm = _alarm_read(row)
            active = self._active(s, app)
            release = _release_read(active, app.name) if active is not None else None
            decision = decide_alarm(alarm, changed, release)
            if decision.event:
                self._event(
                    s,
                    app,
                    actor,
                    EventKind.ALARM,
                    decision.message,
                    release=active,
                    data={"alarm": name, "state": alarm.state, "since": alarm.since},
                )
            events = self._flush_events(s)
        self._emit(events)
        action = decision.action
        message = decision.message
        if action == "rolled_back":
            assert release is not None
            if not roll_back(self, release.id, alarm_actor(name), message):
                action, message = "none", f"{message}; release {release.id} had already ended"
        return AlarmHandled(
            alarm=alarm,
            changed=changed,
            action=action,
            release_id=release.id if release is not None else None,
            message=message,
        )

    def list_alarms(self, app_name: str) -> list[AlarmRead]:
        with self._tx() as s:
            self._app(s, app_name)
            q = select(AlarmRow).where(AlarmRow.app == app_name).order_by(AlarmRow.name)
            return [_alarm_read(row) for row in s.scalars(q)]

    def firing_alarms(self) -> list[AlarmRead]:
        """Every alarm in ALARM, of every app."""
        with self._tx() as s:
            q = select(AlarmRow).where(AlarmRow.state == str(AlarmState.ALARM))
            return [_alarm_read(row) for row in s.scalars(q.order_by(AlarmRow.id))]


def _release_id(app: str, seq: int) -> str:
    """``<app>-<seq>``; an app name too long for a release id (64 characters) keeps a
    prefix and a hash of the whole name, so that two apps never share a release id."""
    rid = f"{app}-{seq}"
    if len(rid) <= _MAX_RELEASE_ID:
        return rid
    tail = f"-{hashlib.sha256(app.encode()).hexdigest()[:8]}-{seq}"
    return app[: _MAX_RELEASE_ID - len(tail)] + tail


@contextmanager
def _conflict_on_integrity_error(message: str) -> Iterator[None]:
    """A unique constraint that a concurrent writer won is a Conflict, not a database error."""
    try:
        yield
    except IntegrityError:
        raise Conflict(message) from None


def _check_settings(settings: ReleaseSettings) -> None:
    parse_strategy(settings.strategy)
    release_analysis(settings.analysis)


def _hook_deadline(h: HookSpec) -> float:
    return h.timeout * (h.retries + 1) + 30.0


def _progress(row: ReleaseRow) -> Progress:
    return Progress(
        phase=Phase(row.phase),
        step=row.step,
        exposure=row.exposure,
        next_action_at=row.next_action_at,
        paused_remaining=row.paused_remaining,
        reason=row.reason,
    )


def _core_release(row: ReleaseRow, app: str) -> Release:
    t = row.targeting or {}
    return Release(
        id=row.id,
        app=app,
        baseline=row.baseline,
        candidate=row.candidate,
        salt=row.salt,
        strategy=parse_strategy(row.strategy),
        route_mode=RouteMode(row.route_mode),
        exposure=row.exposure,
        phase=Phase(row.phase),
        targeting=Targeting(
            frozenset(t.get("always_canary", ())), frozenset(t.get("never_canary", ()))
        ),
    )


def _release_read(row: ReleaseRow, app: str) -> ReleaseRead:
    strategy = parse_strategy(row.strategy)
    return ReleaseRead(
        id=row.id,
        app=app,
        phase=row.phase,
        route_mode=row.route_mode,
        exposure=row.exposure,
        step=row.step,
        steps=[
            StepRead(index=i, exposure=st.exposure, hold=st.hold)
            for i, st in enumerate(strategy.steps)
        ],
        strategy=strategy.name if strategy.name != "custom" else strategy.describe(),
        baseline=dict(row.baseline),
        candidate=dict(row.candidate),
        changed=sorted(fn for fn in row.candidate if row.candidate[fn] != row.baseline.get(fn)),
        targeting=TargetingSpec.model_validate(row.targeting or {}),
        hooks={k: HookSpec.model_validate(v) for k, v in (row.hooks or {}).items()},
        analysis=dict(row.analysis or {}),
        next_action_at=row.next_action_at,
        reason=row.reason,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        row_version=row.row_version,
    )


def _event_read(row: EventRow) -> EventRead:
    return EventRead(
        id=row.id,
        app=row.app,
        release_id=row.release_id,
        at=row.at,
        actor=row.actor,
        kind=row.kind,
        message=row.message,
        phase=row.phase,
        exposure=row.exposure,
        data=dict(row.data or {}),
    )


def _run_read(row: AnalysisRunRow) -> AnalysisRunRead:
    return AnalysisRunRead(
        id=row.id,
        release_id=row.release_id,
        at=row.at,
        window_start=row.window_start,
        window_end=row.window_end,
        outcome=row.outcome,
        action=row.action,
        results=dict(row.results or {}),
    )


def _alarm_read(row: AlarmRow) -> AlarmRead:
    return AlarmRead(
        app=row.app,
        name=row.name,
        state="ALARM" if row.state == AlarmState.ALARM else "OK",
        reason=row.reason,
        since=row.since,
        updated_at=row.updated_at,
    )
