"""Releases: start one, read them, and every transition of their state machine.

Each public method is one unit of work (`coalmine.store.uow`): a transition
is stored with its audit event, bumps the app's routing revision when
routing changed, and marks the change feed, all in one transaction.
Optimistic concurrency (``row_version``) makes two writers of one release
never both win: the loser gets `Conflict`. `rollback` (and `command`) own
the retry on such a conflict, so the judge, an alarm and a hook's report
all roll back the same way.

A candidate ``latest-published`` is resolved when the release starts: the
function's Lambda function (read off its registered Lambda versions) is
asked for its newest published version before the transaction opens, and
that version is registered (if it is not yet) in the transaction that
starts the release.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from coalmine.controller.analysis_settings import stored_analysis
from coalmine.controller.schemas import LATEST_PUBLISHED, ReleaseCreate, ReleaseSettings
from coalmine.controller.versions import lambda_function_of, register
from coalmine.core.analysis import judged
from coalmine.core.bucketing import new_salt
from coalmine.core.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    UpstreamFailed,
    retry_on_conflict,
)
from coalmine.core.machine import (
    Command,
    Event,
    EventKind,
    InvalidTransition,
    Operator,
    start_progress,
    transition,
)
from coalmine.core.model import Phase, Release, RouteMode, Target, Targeting
from coalmine.core.ports import LambdaVersions, PublishedVersion, Transitioned
from coalmine.core.records import EventRecord, ReleaseRecord
from coalmine.core.strategy import parse_strategy
from coalmine.integrations.lambda_versions import Boto3LambdaVersions
from coalmine.store.models import AppRow, FunctionRow, ReleaseRow
from coalmine.store.uow import UnitOfWork, Work

__all__ = ["ReleaseService", "Transitioned", "release_id_for"]

log = logging.getLogger(__name__)
_MAX_RELEASE_ID = 64  # a release id is a version-like name (core.model.VERSION_PATTERN)
_ATTEMPTS = 3
"""tries of a rollback or pause that another writer keeps beating"""


def release_id_for(app: str, seq: int) -> str:
    """``<app>-<seq>``; an app name too long for a release id (64 characters) keeps a
    prefix and a hash of the whole name, so that two apps never share a release id."""
    rid = f"{app}-{seq}"
    if len(rid) <= _MAX_RELEASE_ID:
        return rid
    tail = f"-{hashlib.sha256(app.encode()).hexdigest()[:8]}-{seq}"
    return app[: _MAX_RELEASE_ID - len(tail)] + tail


class ReleaseService:
    """Implements `coalmine.core.ports.ReleaseStore` over the SQL store.

    ``lambda_versions`` resolves ``latest-published`` candidates (default: AWS).
    """

    def __init__(self, uow: UnitOfWork, lambda_versions: LambdaVersions | None = None) -> None:
        self.uow = uow
        self.lambda_versions = (
            lambda_versions if lambda_versions is not None else Boto3LambdaVersions()
        )

    # -- reads ---------------------------------------------------------------
    def get(self, release_id: str) -> ReleaseRecord:
        with self.uow() as w:
            row = w.releases.get(release_id)
            return w.releases.record(row, w.releases.app_name(row))

    def recent(self, app: str | None = None, *, limit: int = 50) -> list[ReleaseRecord]:
        """The newest releases (of one app, or of all), newest first."""
        with self.uow() as w:
            app_row = w.apps.get(app) if app is not None else None
            return [w.releases.record(r, n) for r, n in w.releases.newest(app_row, limit=limit)]

    def active(self, app: str) -> ReleaseRecord | None:
        """The release that owns ``app`` now, if any."""
        with self.uow() as w:
            row = w.releases.active(w.apps.get(app))
            return w.releases.record(row, app) if row is not None else None

    def all_active(self) -> list[ReleaseRecord]:
        """Every release that still owns its app (pending to rolling back), oldest first."""
        with self.uow() as w:
            return [w.releases.record(r, n) for r, n in w.releases.all_active()]

    def due(self, now: float) -> list[str]:
        with self.uow() as w:
            return w.releases.due(now)

    def next_due_at(self) -> float | None:
        with self.uow() as w:
            return w.releases.next_due_at()

    # -- start ---------------------------------------------------------------
    def start(self, app_name: str, req: ReleaseCreate, actor: str) -> ReleaseRecord:
        newest = self._newest_published(app_name, req)
        try:
            with self.uow() as w:
                out = self.start_in(w, w.apps.get(app_name, lock=True), req, actor, newest)
        except IntegrityError:
            raise Conflict(
                f"app {app_name!r} already has an active release (started concurrently)"
            ) from None
        return out

    def start_in(
        self,
        w: Work,
        app: AppRow,
        req: ReleaseCreate,
        actor: str,
        newest: Mapping[str, PublishedVersion] | None = None,
    ) -> ReleaseRecord:
        """Start a release inside ``w``, the caller's transaction (``app`` locked by it), so
        that it commits with the caller's other changes or not at all (`coalmine apply`).
        ``newest`` holds the ``latest-published`` versions, asked of AWS before ``w`` opened.
        A concurrent start surfaces as IntegrityError at the commit: the caller's to map."""
        newest = newest or {}
        app_name = app.name
        active = w.releases.active(app)
        if active is not None:
            raise Conflict(
                f"app {app_name!r} already has an active release {active.id}"
                f" ({active.phase}); promote or roll it back first"
            )
        defaults = ReleaseSettings.model_validate(app.settings)
        current: dict[str, str] = {}
        for fn in w.apps.functions(app):
            if fn.current_version is not None:
                current[fn.name] = fn.current_version
            elif fn.name in req.candidate:
                raise InvalidInput(
                    f"function {fn.name} has no current version yet: set one"
                    " (current: in coalmine.yaml) before releasing a candidate"
                )
        changes = dict(req.candidate)
        for fn_name, published in newest.items():
            changes[fn_name] = self._use_published(w, app, fn_name, published, actor)
        if newest and all(current.get(fn) == ver for fn, ver in changes.items()):
            raise InvalidInput(
                "nothing to release: "
                + "; ".join(
                    f"the newest published version of {fn} is {ver}, which it runs"
                    if fn in newest
                    else f"{fn} runs {ver}"
                    for fn, ver in sorted(changes.items())
                )
            )
        for fn_name, ver in changes.items():
            if w.apps.version(w.apps.function(app, fn_name), ver) is None:
                raise NotFound(f"version {ver!r} of {fn_name} is not registered; register it first")
        strategy = parse_strategy(req.strategy if req.strategy is not None else defaults.strategy)
        hooks = req.hooks if req.hooks is not None else defaults.hooks
        analysis = stored_analysis(req.analysis if req.analysis is not None else defaults.analysis)
        route_mode = RouteMode(req.route_mode or defaults.route_mode)
        seq = w.releases.next_seq(app)
        release = Release.start(
            id=release_id_for(app.name, seq),
            app=app.name,
            current=current,
            changes=changes,
            salt=new_salt(),
            strategy=strategy,
            route_mode=route_mode,
            targeting=Targeting(
                frozenset(req.targeting.always_canary),
                frozenset(req.targeting.never_canary),
            ),
        )
        now = w.clock()
        p = start_progress(now)
        row = w.releases.add(
            ReleaseRow(
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
                analysis=analysis,
                exposure=p.exposure,
                step=p.step,
                next_action_at=p.next_action_at,
                lambda_alias=defaults.lambda_alias,
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
        )
        changed = ", ".join(
            f"{fn} {release.baseline[fn]}->{release.candidate[fn]}"
            for fn in release.changed_functions
        )
        w.event(
            app,
            actor,
            EventKind.CREATED,
            f"release {row.id} created: {changed}; strategy {strategy.name}"
            f" ({strategy.describe()})",
            release=row,
        )
        w.changed(app)
        return w.releases.record(row, app.name)

    def _newest_published(self, app_name: str, req: ReleaseCreate) -> dict[str, PublishedVersion]:
        """The newest published version of each ``latest-published`` function's Lambda
        function, asked of AWS outside any transaction."""
        wanted = sorted(fn for fn, ver in req.candidate.items() if ver == LATEST_PUBLISHED)
        if not wanted:
            return {}
        with self.uow() as w:
            app = w.apps.get(app_name)
            functions = {}
            for fn_name in wanted:
                fn = w.apps.function(app, fn_name)
                functions[fn_name] = lambda_function_of(fn, w.apps.versions(fn))
        newest: dict[str, PublishedVersion] = {}
        for fn_name, function in functions.items():
            try:
                published = self.lambda_versions.published(function)
            except (InvalidInput, UpstreamFailed) as exc:
                raise type(exc)(f"function {fn_name} ({LATEST_PUBLISHED}): {exc}") from None
            if not published:
                raise InvalidInput(
                    f"function {fn_name} ({LATEST_PUBLISHED}): Lambda function {function} has"
                    " no published version: publish one first"
                )
            newest[fn_name] = published[-1]
        return newest

    @staticmethod
    def _use_published(
        w: Work, app: AppRow, fn_name: str, published: PublishedVersion, actor: str
    ) -> str:
        """The name of the version whose target is ``published``, registered under its
        number if no version has that target yet."""
        fn: FunctionRow = w.apps.function(app, fn_name)
        for version in w.apps.versions(fn):
            if version.target == published.arn:
                return version.name
        register(w, app, fn, published.version, Target.parse(published.arn), actor)
        return published.version

    # -- transitions ---------------------------------------------------------
    def operate(
        self, release_id: str, command: Command, actor: str, reason: str = ""
    ) -> ReleaseRecord:
        """An operator's promote / rollback / pause / resume (409 if the phase forbids it)."""
        done = self._apply(release_id, Operator(command, self.uow.clock(), reason), actor)
        assert done is not None  # operator commands always transition or raise
        return done.release

    def advance(
        self, release_id: str, event: Event, actor: str = "controller"
    ) -> Transitioned | None:
        """Feed the state machine a tick or a hook result; None when nothing changed."""
        return self._apply(release_id, event, actor)

    def command(self, release_id: str, command: Command, actor: str, reason: str) -> bool:
        """Carry out ``command`` as ``actor`` (the judge, an alarm), retrying when another
        writer changed the release meanwhile. False when the release's phase no longer
        allows it (it ended, or was paused or promoted meanwhile)."""
        try:
            retry_on_conflict(
                lambda: self.operate(release_id, command, actor, reason), attempts=_ATTEMPTS
            )
        except InvalidTransition as exc:
            log.info("release %s: not %s: %s", release_id, command, exc)
            return False
        log.warning("release %s: %s by %s: %s", release_id, command, actor, reason)
        return True

    def rollback(self, release_id: str, actor: str, reason: str) -> bool:
        """Roll a release back (see `command`); False when it cannot be any more."""
        return self.command(release_id, Command.ROLLBACK, actor, reason)

    def _apply(self, release_id: str, event: Event, actor: str) -> Transitioned | None:
        try:
            with self.uow() as w:
                row = w.releases.get(release_id)
                app = w.apps.by_id(row.app_id)
                before = w.releases.record(row, app.name)
                t = transition(
                    before.strategy,
                    frozenset(before.hooks),
                    before.progress,
                    event,
                    hook_deadline=before.hook_deadline,
                    gated=judged(before.analysis),
                )
                if t is None:
                    return None
                after = before.after(t, w.clock())
                w.releases.write(row, after)  # row_version is the mapper's to bump
                if after.phase is Phase.PROMOTED:
                    for fn in w.apps.functions(app):
                        if fn.name in row.candidate:
                            fn.current_version = row.candidate[fn.name]
                w.session.flush()
                w.event(
                    app,
                    actor,
                    t.kind,
                    t.message,
                    release=row,
                    data={"reason": after.reason} if after.reason else None,
                )
                if (after.phase, after.exposure) != (before.phase, before.exposure):
                    w.changed(app)
                out = Transitioned(w.releases.record(row, app.name), t)
        except StaleDataError:
            raise Conflict(
                f"release {release_id} was changed by someone else at the same time; try again"
            ) from None
        return out

    # -- the audit log of a release -------------------------------------------
    def note(
        self,
        release_id: str,
        kind: str,
        message: str,
        actor: str,
        data: Mapping[str, Any] | None = None,
    ) -> EventRecord:
        """Write an audit event about a release without changing it (analysis, alarms)."""
        with self.uow() as w:
            row = w.releases.get(release_id)
            event = w.event(w.apps.by_id(row.app_id), actor, kind, message, release=row, data=data)
            w.session.flush()
            return w.events.record(event)
