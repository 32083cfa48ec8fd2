"""The catalog: apps, their functions and versions, and the declarative ``apply``.

Each public method is one unit of work (`coalmine.store.uow`): a failure
changes nothing, and every change writes an audit event and bumps the app's
routing revision. Versions are immutable; a function's current version
changes outside releases only while the app has no active release.

A function declared with ``versions: published`` gets its Lambda function's
published versions (`coalmine.core.ports.LambdaVersions`), asked for before
the transaction opens: an AWS error applies nothing, and no transaction
waits on AWS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError

from coalmine.controller.analysis_settings import release_analysis
from coalmine.controller.schemas import (
    PUBLISHED,
    ApplyRead,
    AppRead,
    AppSpec,
    FunctionRead,
    ReleaseCreate,
    ReleaseSettings,
    VersionCreate,
    VersionRead,
)
from coalmine.controller.versions import check_version_name, register
from coalmine.core.alias import AliasCallFailed
from coalmine.core.errors import Conflict, InvalidInput, NotFound, UpstreamFailed
from coalmine.core.model import ROLLED_BACK_PHASES, Phase, Target, validate_name
from coalmine.core.ports import LambdaAliases, LambdaVersions
from coalmine.core.records import ReleaseRecord
from coalmine.core.strategy import parse_strategy
from coalmine.integrations.lambda_alias import Boto3LambdaAliases
from coalmine.integrations.lambda_versions import Boto3LambdaVersions
from coalmine.store.models import AppRow, FunctionRow
from coalmine.store.uow import UnitOfWork, Work

__all__ = ["CatalogService", "ReleaseStarter", "check_settings"]

ReleaseStarter = Callable[[Work, AppRow, ReleaseCreate, str], ReleaseRecord]
"""Starts a release inside the caller's transaction (`ReleaseService.start_in`): how apply
starts the release a file's ``version``s ask for without importing the release service."""


def check_settings(settings: ReleaseSettings) -> None:
    """Raise `InvalidInput` unless an app's release defaults parse (strategy, analysis)."""
    parse_strategy(settings.strategy)
    release_analysis(settings.analysis)


@contextmanager
def _conflict_on_integrity_error(message: str) -> Iterator[None]:
    """A unique constraint that a concurrent writer won is a Conflict, not a database error."""
    try:
        yield
    except IntegrityError:
        raise Conflict(message) from None


class CatalogService:
    """``lambda_versions`` lists a Lambda function's published versions (default: from
    AWS); ``lambda_aliases`` reads the alias that tells which of them runs now;
    ``start_release`` starts the release a file's ``version``s ask for (without it, such a
    file is refused)."""

    def __init__(
        self,
        uow: UnitOfWork,
        lambda_versions: LambdaVersions | None = None,
        lambda_aliases: LambdaAliases | None = None,
        start_release: ReleaseStarter | None = None,
    ) -> None:
        self.uow = uow
        self.start_release = start_release
        self.lambda_versions = (
            lambda_versions if lambda_versions is not None else Boto3LambdaVersions()
        )
        self.lambda_aliases = lambda_aliases if lambda_aliases is not None else Boto3LambdaAliases()

    # -- reads ---------------------------------------------------------------
    def list_apps(self) -> list[AppRead]:
        with self.uow() as w:
            return [self._app_read(w, row) for row in w.apps.all()]

    def get_app(self, name: str) -> AppRead:
        with self.uow() as w:
            return self._app_read(w, w.apps.get(name))

    @staticmethod
    def _app_read(w: Work, app: AppRow) -> AppRead:
        functions = [
            FunctionRead(
                name=fn.name,
                current_version=fn.current_version,
                versions=[
                    VersionRead(name=v.name, target=v.target, created_at=v.created_at)
                    for v in w.apps.versions(fn)
                ],
            )
            for fn in w.apps.functions(app)
        ]
        active = w.releases.active(app)
        return AppRead(
            name=app.name,
            revision=app.revision,
            created_at=app.created_at,
            settings=ReleaseSettings.model_validate(app.settings).redacted(),
            functions=functions,
            active_release=active.id if active is not None else None,
        )

    # -- writes --------------------------------------------------------------
    def create_app(self, name: str, actor: str, settings: ReleaseSettings | None = None) -> AppRead:
        validate_name(name, "app")
        settings = settings or ReleaseSettings()
        check_settings(settings)
        with _conflict_on_integrity_error(f"app {name!r} already exists"), self.uow() as w:
            if w.apps.find(name) is not None:
                raise Conflict(f"app {name!r} already exists")
            app = w.apps.add(
                AppRow(name=name, settings=settings.model_dump(mode="json"), created_at=w.clock())
            )
            w.event(app, actor, "app_created", f"app {name} created")
            w.changed(app)
            w.session.flush()
            return self._app_read(w, app)

    def add_function(self, app_name: str, name: str, actor: str) -> AppRead:
        validate_name(name, "function")
        clash = f"app {app_name!r} already has a function named {name!r}"
        with _conflict_on_integrity_error(clash), self.uow() as w:
            app = w.apps.get(app_name)
            self._add_function(w, app, name, actor)
            w.session.flush()
            return self._app_read(w, app)

    @staticmethod
    def _add_function(w: Work, app: AppRow, name: str, actor: str) -> FunctionRow:
        if w.apps.find_function(app, name) is not None:
            raise Conflict(f"app {app.name!r} already has a function named {name!r}")
        fn = w.apps.add_function(FunctionRow(app_id=app.id, name=name, created_at=w.clock()))
        w.event(app, actor, "function_added", f"function {name} added")
        w.changed(app)
        return fn

    def register_version(
        self, app_name: str, function: str, version: VersionCreate, actor: str
    ) -> VersionRead:
        check_version_name(version.name)
        target = Target.parse(version.target)
        clash = f"version {version.name} of {function} was registered at the same time"
        with _conflict_on_integrity_error(clash), self.uow() as w:
            app = w.apps.get(app_name)
            fn = w.apps.function(app, function)
            row = register(w, app, fn, version.name, target, actor)
            return VersionRead(name=row.name, target=row.target, created_at=row.created_at)

    def set_current(self, app_name: str, function: str, version: str, actor: str) -> AppRead:
        """Set the version a function runs outside a release (only with no active release)."""
        with self.uow() as w:
            app = w.apps.get(app_name, lock=True)
            fn = w.apps.function(app, function)
            self._set_current(w, app, fn, version, actor)
            w.session.flush()
            return self._app_read(w, app)

    @staticmethod
    def _set_current(w: Work, app: AppRow, fn: FunctionRow, version: str, actor: str) -> None:
        if w.apps.version(fn, version) is None:
            raise NotFound(f"version {version!r} of {fn.name} is not registered")
        active = w.releases.active(app)
        if active is not None:
            raise Conflict(
                f"app {app.name!r} has an active release {active.id} ({active.phase});"
                " change current versions through releases"
            )
        fn.current_version = version
        w.event(
            app,
            actor,
            "current_set",
            f"{fn.name} now runs {version}",
            data={"function": fn.name, "version": version},
        )
        w.changed(app)

    # -- declarative apply ---------------------------------------------------
    def apply(self, spec: AppSpec, actor: str, *, dry_run: bool = False) -> ApplyRead:
        """Make the store hold what ``spec`` describes; applying twice changes nothing.

        Creates the app, functions and versions that are missing (a function
        with ``versions: published`` gets every published version of its
        Lambda function, named by its number), sets each function's current
        version when it has none, and replaces the release settings. A version
        that exists with another target is an error (versions are immutable),
        as is a ``current`` other than the running version in a function
        without ``version`` (that is what releases are for).

        Functions with ``version`` are the file's truth: when one differs from
        the running version, a release to the file's versions starts, with the
        file's ``release:`` settings, in the same transaction (`_release_to_file`).
        """
        validate_name(spec.app, "app")
        check_settings(spec.release)
        declared = self._declared_versions(spec)
        aliased = self._alias_versions(spec, declared)
        targets = {
            (fname, ver): Target.parse(ref)
            for fname, versions in declared.items()
            for ver, ref in versions.items()
        }
        for fname, fs in spec.functions.items():
            for ver in declared[fname]:
                check_version_name(ver)
            among = (
                f"the published versions of {fs.lambda_function}"
                f" ({', '.join(declared[fname]) or 'none'})"
                if fs.versions == PUBLISHED
                else "its versions"
            )
            for key, named in (("current", fs.current), ("version", fs.version)):
                if named is not None and named not in declared[fname]:
                    raise InvalidInput(
                        f"function {fname}: {key} version {named!r} is not among {among}"
                    )
        changes: list[str] = []
        # another apply may create the same app, function or version (or start a release)
        # at the same time
        retry = f"app {spec.app!r} was changed by someone else at the same time; apply again"
        with _conflict_on_integrity_error(retry), self.uow() as w:
            app = w.apps.find(spec.app)
            if app is not None:  # held: a release may start below
                app = w.apps.get(spec.app, lock=True)
            else:
                app = w.apps.add(AppRow(name=spec.app, settings={}, created_at=w.clock()))
                changes.append(f"create app {spec.app}")
                w.event(app, actor, "app_created", f"app {spec.app} created by apply")
            settings = spec.release.model_dump(mode="json")
            if app.settings != settings:
                if app.settings:
                    changes.append("update release settings")
                    w.event(app, actor, "settings_updated", "release settings updated by apply")
                app.settings = settings
            for fn_name, fs in sorted(spec.functions.items()):
                fn = w.apps.find_function(app, fn_name)
                if fn is None:
                    fn = self._add_function(w, app, fn_name, actor)
                    changes.append(f"create function {fn_name}")
                for ver in sorted(declared[fn_name], key=_version_order):
                    target = targets[fn_name, ver]
                    existing = w.apps.version(fn, ver)
                    if existing is None:
                        register(w, app, fn, ver, target, actor)
                        changes.append(f"register {fn_name} {ver} -> {target.ref}")
                    elif existing.target != target.ref:
                        raise Conflict(
                            f"version {ver} of {fn_name} is registered with target"
                            f" {existing.target!r}, the file says {target.ref!r}; versions are"
                            " immutable: give the new build a new version name"
                        )
                if fs.current is None and fn.current_version is None and fn_name in aliased:
                    version = aliased[fn_name]
                    self._set_current(w, app, fn, version, actor)
                    changes.append(
                        f"set {fn_name} current version {version}"
                        f" (alias {spec.release.lambda_alias} of {fs.lambda_function} routes to it)"
                    )
                # with no current, a new function starts on the file's version: nothing to
                # release from
                first = fs.current if fs.current is not None else fs.version
                if first is not None and fn.current_version is None:
                    self._set_current(w, app, fn, first, actor)
                    changes.append(f"set {fn_name} current version {first}")
                elif fs.version is None and fs.current not in (None, fn.current_version):
                    raise Conflict(
                        f"function {fn_name} runs {fn.current_version}, the file says current"
                        f" {fs.current}: change running versions with a release; to have apply"
                        f" start it, say version: {fs.current} for {fn_name} in the file"
                        f" (or coalmine release start {spec.app} --set {fn_name}={fs.current})"
                    )
            release, notes = self._release_to_file(w, app, spec, actor, changes)
            if changes:
                w.changed(app)
            if dry_run:
                w.discard()
        return ApplyRead(
            app=spec.app,
            changed=bool(changes),
            changes=changes,
            dry_run=dry_run,
            release=release,
            notes=notes,
        )

    def _release_to_file(
        self, w: Work, app: AppRow, spec: AppSpec, actor: str, changes: list[str]
    ) -> tuple[str | None, list[str]]:
        """Start the release to the file's ``version``s that differ from the running ones.

        Returns the release started (or the active one already moving to those
        versions) and notes. An active release to other versions is a Conflict:
        the file and the release disagree, and which should win is a person's call.
        Versions whose last release was rolled back are not released again by the
        same file (what Flagger and Argo Rollouts do with a failed revision): only a
        change of the file, or ``coalmine release start``, tries again.
        """
        wanted = {fn: fs.version for fn, fs in spec.functions.items() if fs.version is not None}
        if not wanted:
            return None, []
        running = {fn.name: fn.current_version for fn in w.apps.functions(app)}
        active = w.releases.active(app)
        if active is not None:
            rec = w.releases.record(active, app.name)
            heading = {fn: rec.candidate.get(fn, running.get(fn)) for fn in wanted}
            if heading == wanted and rec.phase not in ROLLED_BACK_PHASES:
                return rec.id, [
                    f"release {rec.id} ({rec.phase}, exposure {rec.exposure / 100:g}%) is"
                    f" moving {_moves(rec.baseline, rec.candidate, rec.changed)}, as the file says"
                ]
            if heading != wanted:
                differ = sorted(fn for fn in wanted if heading[fn] != wanted[fn])
                raise Conflict(
                    f"app {app.name!r} has an active release {rec.id} ({rec.phase}) to "
                    + ", ".join(f"{fn} {heading[fn]}" for fn in differ)
                    + "; the file says "
                    + ", ".join(f"{fn} {wanted[fn]}" for fn in differ)
                    + ": wait until it ends, or roll it back"
                    f" (coalmine release rollback {rec.id}), then apply again"
                )
        moves = {fn: ver for fn, ver in wanted.items() if running.get(fn) != ver}
        if not moves:
            return None, []
        latest = w.releases.latest_of(app, limit=1)
        if latest:
            last = w.releases.record(latest[0], app.name)
            if (
                last.phase in ROLLED_BACK_PHASES
                and {fn: last.candidate[fn] for fn in last.changed} == moves
                and all(last.baseline.get(fn) == running.get(fn) for fn in moves)
            ):
                sets = " ".join(f"--set {fn}={ver}" for fn, ver in sorted(moves.items()))
                ended = "is rolling back" if last.phase is Phase.ROLLING_BACK else "was rolled back"
                return None, [
                    f"not released again: release {last.id} of"
                    f" {_moves(running, moves, sorted(moves))} {ended}"
                    + (f" ({last.reason})" if last.reason else "")
                    + "; give the file a new version to release it, or the running ones to"
                    f" say so; to try the same again: coalmine release start {app.name} {sets}"
                ]
        if self.start_release is None:
            raise InvalidInput("this control plane cannot start releases from a file")
        rec = self.start_release(w, app, ReleaseCreate(candidate=moves), actor)
        changes.append(
            f"start release {rec.id}: {_moves(rec.baseline, rec.candidate, rec.changed)}"
            f" (strategy {rec.strategy.name}, route mode {rec.route_mode})"
        )
        return rec.id, []

    def _declared_versions(self, spec: AppSpec) -> dict[str, dict[str, str]]:
        """Each function's versions (name -> target), published ones asked of AWS."""
        out: dict[str, dict[str, str]] = {}
        for fname, fs in spec.functions.items():
            if isinstance(fs.versions, dict):
                out[fname] = dict(fs.versions)
                continue
            assert fs.lambda_function is not None  # FunctionSpec requires it with published
            try:
                published = self.lambda_versions.published(fs.lambda_function)
            except (InvalidInput, UpstreamFailed) as exc:
                raise type(exc)(f"function {fname} (versions: published): {exc}") from None
            out[fname] = {v.version: v.arn for v in published}
        return out

    def _alias_versions(self, spec: AppSpec, declared: dict[str, dict[str, str]]) -> dict[str, str]:
        """The version ``release.lambda_alias`` routes to, per published function with no
        ``current`` in the file: the version running now, what a release starts from.

        A function whose alias cannot be read (no such alias yet) gets none: a release
        of it then says to set ``current``.
        """
        alias = spec.release.lambda_alias
        out: dict[str, str] = {}
        if alias is None:
            return out
        for fname, fs in spec.functions.items():
            if fs.versions != PUBLISHED or fs.current is not None or fs.lambda_function is None:
                continue
            try:
                routing = self.lambda_aliases.get(fs.lambda_function, alias)
            except AliasCallFailed:
                continue
            if routing.version in declared[fname]:
                out[fname] = routing.version
        return out


def _moves(
    baseline: Mapping[str, str | None], candidate: Mapping[str, str], functions: list[str]
) -> str:
    return ", ".join(f"{fn} {baseline.get(fn)}->{candidate[fn]}" for fn in functions)


def _version_order(name: str) -> tuple[int, str]:
    """Published versions by number (2 before 10), other names as they sort."""
    return (int(name), "") if name.isdigit() else (0, name)
