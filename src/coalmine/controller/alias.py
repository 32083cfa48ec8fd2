"""Keeping a release's Lambda alias true: `AliasKeeper`, run by the controller loop.

A release whose app sets ``release.lambda_alias`` (copied onto the release
when it starts) keeps that alias of each changed function whose baseline and
candidate are published versions of one Lambda function
(`coalmine.core.alias.plan_aliases`) where the release says it should be
(`coalmine.core.alias.alias_routing`): on the baseline in user mode until
the release is promoted, shifting weights in request mode, reset on rollback,
on the candidate once promoting.

The loop calls `keep` after each transition it made, once that transition
is committed, outside any database transaction, and `reconcile` at every
tick for transitions made elsewhere (an operator's command, the judge) and
after a restart: the wanted state is recomputed from the release record,
read from AWS (GetAlias) and written only when it differs (UpdateAlias).

- Every move of an alias is an ``alias`` audit event (function, alias,
  version, weights, what it was before).
- A failing call is tried again, ``attempts`` times in all with a doubling
  pause, within ``budget`` seconds. When it keeps failing, an
  ``alias_failed`` event says which functions' aliases were changed and
  which not, and a running or promoting release is **paused** with AWS's
  error in its reason. A promoting release is never promoted before its
  aliases moved (`ready`); a rollback is never held up by one (rollback
  wins), its failure is reported and retried.
- A sync that failed is tried again at the release's next change, or after
  ``retry_after`` seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from coalmine.controller.plane import ControlPlane
from coalmine.core.alias import (
    AliasCallFailed,
    AliasedFunction,
    AliasPlan,
    AliasRouting,
    alias_routing,
    plan_aliases,
)
from coalmine.core.machine import Command
from coalmine.core.model import Phase
from coalmine.core.ports import LambdaAliases
from coalmine.core.records import ReleaseRecord
from coalmine.integrations.lambda_alias import Boto3LambdaAliases

__all__ = ["MAX_BACKOFF", "AliasKeeper", "AliasSync"]

log = logging.getLogger(__name__)

MAX_BACKOFF = 4.0
"""seconds: the longest pause between two attempts of one AWS call"""
_PAUSABLE = frozenset({Phase.RUNNING, Phase.PROMOTING})
_MAX_ERROR = 500
"""characters of AWS's error kept in a release's reason"""


class AliasSync(StrEnum):
    """What keeping a release's aliases came to."""

    KEPT = "kept"
    """every alias is where the release wants it (or the release keeps none)"""
    FAILED = "failed"
    """an alias could not be moved; the release was not paused (its phase does not allow it)"""
    PAUSED = "paused"
    """an alias could not be moved, and the release was paused for it"""


@dataclass(frozen=True, slots=True)
class _Failure:
    release: ReleaseRecord
    at: float
    """monotonic seconds"""
    message: str


class AliasKeeper:
    """Keeps each release's Lambda alias where the release wants it; see the module docstring.

    ``aliases`` reads and moves the aliases (default: `Boto3LambdaAliases`
    over the standard AWS chain, made on first use). ``sleep`` and
    ``monotonic`` are the time functions of the retries (tests pass their own).
    """

    def __init__(
        self,
        plane: ControlPlane,
        aliases: LambdaAliases | None = None,
        *,
        actor: str = "controller",
        attempts: int = 3,
        backoff: float = 0.5,
        budget: float = 10.0,
        retry_after: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts!r}")
        self.releases = plane.releases
        self.catalog = plane.catalog
        self._owns_aliases = aliases is None
        self.aliases: LambdaAliases = aliases if aliases is not None else Boto3LambdaAliases()
        self.actor = actor
        self.attempts = attempts
        self.backoff = backoff
        self.budget = budget
        self.retry_after = retry_after
        self.sleep = sleep
        self.monotonic = monotonic
        self._plans: dict[str, AliasPlan] = {}
        """release id -> its plan (the targets of versions never change)"""
        self._known: dict[tuple[str, str], AliasRouting] = {}
        """(Lambda function, alias) -> what it routes as, as last read or written"""
        self._kept: dict[str, int] = {}
        """release id -> the row version whose aliases are as it wants"""
        self._failed: dict[str, _Failure] = {}
        self._noted: set[str] = set()
        """releases whose skipped functions were reported"""

    def close(self) -> None:
        """Close the AWS clients this keeper made."""
        close = getattr(self.aliases, "close", None)
        if self._owns_aliases and callable(close):
            close()

    # -- what the loop calls -------------------------------------------------------
    def ready(self, release_id: str) -> bool:
        """False while a promoting release's aliases did not move: it must not be promoted."""
        failure = self._failed.get(release_id)
        return failure is None or failure.release.phase is not Phase.PROMOTING

    def reconcile(self) -> int:
        """Keep the aliases of every started release whose record changed since they were
        last kept (all of them after a restart), and retry those that failed; the number of
        releases paused."""
        try:
            active = self.releases.all_active()
        except Exception:
            log.exception("aliases: cannot list the active releases")
            return 0
        paused = 0
        seen = {r.id for r in active}
        for release in active:
            # a pending release is kept from the loop's first transition of it, which follows
            if release.phase is not Phase.PENDING:
                paused += self.keep(release) is AliasSync.PAUSED
        for release_id, failure in list(self._failed.items()):
            if release_id not in seen:  # ended (promoted, rolled back) with an alias not reset
                paused += self.keep(failure.release) is AliasSync.PAUSED
        wanted = seen | set(self._failed)
        for cache in (self._plans, self._kept):
            for release_id in [k for k in cache if k not in wanted]:
                del cache[release_id]
        self._noted &= wanted
        return paused

    def keep(self, release: ReleaseRecord) -> AliasSync:
        """Put the aliases of ``release`` where it wants them (a no-op when they are). Never
        raises: a failure is reported, pauses the release if it may be, and is retried."""
        if release.lambda_alias is None or self._kept.get(release.id) == release.row_version:
            return AliasSync.KEPT
        failure = self._failed.get(release.id)
        if (
            failure is not None
            and failure.release.row_version == release.row_version
            and self.monotonic() - failure.at < self.retry_after
        ):
            return AliasSync.FAILED  # not yet: retried after retry_after, or once it changes
        try:
            return self._sync(release)
        except Exception as exc:  # the store, a broken adapter: tried again like a failed call
            log.exception("aliases: release %s: keeping its aliases failed", release.id)
            self._failed[release.id] = _Failure(release, self.monotonic(), str(exc))
            return AliasSync.FAILED

    # -- one release ---------------------------------------------------------------
    def _plan(self, release: ReleaseRecord, alias: str) -> AliasPlan:
        plan = self._plans.get(release.id)
        if plan is None:
            app = self.catalog.get_app(release.app)
            targets = {f.name: {v.name: v.target for v in f.versions} for f in app.functions}
            changed = {
                fn: (
                    targets.get(fn, {}).get(release.baseline.get(fn, "")),
                    targets.get(fn, {}).get(release.candidate[fn]),
                )
                for fn in release.changed
            }
            plan = self._plans[release.id] = plan_aliases(alias, changed)
        return plan

    def _sync(self, release: ReleaseRecord) -> AliasSync:
        assert release.lambda_alias is not None
        plan = self._plan(release, release.lambda_alias)
        if plan.skipped and release.id not in self._noted:
            self._note_skipped(release, plan)
        changed: list[str] = []
        for fn in plan.functions:
            want = alias_routing(release.phase, release.route_mode, release.exposure, fn)
            key = (fn.lambda_function, plan.alias)
            known = self._known.get(key)
            if known is not None and known.same(want):
                continue
            try:
                before = self._retrying("GetAlias", fn, plan.alias, None)
                if before.same(want):
                    self._known[key] = before
                    continue
                self._known[key] = self._retrying("UpdateAlias", fn, plan.alias, want)
            except AliasCallFailed as exc:
                self._known.pop(key, None)  # unknown now: read it again next time
                return self._fail(release, plan, fn, want, str(exc), changed)
            changed.append(fn.function)
            self._note_moved(release, plan.alias, fn, before, want)
        self._kept[release.id] = release.row_version
        self._failed.pop(release.id, None)
        return AliasSync.KEPT

    def _retrying(
        self, operation: str, fn: AliasedFunction, alias: str, want: AliasRouting | None
    ) -> AliasRouting:
        """One GetAlias (``want`` None) or UpdateAlias, tried ``attempts`` times within
        ``budget`` seconds; the last `AliasCallFailed`, naming the attempts, when none passed."""
        started = self.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                if want is None:
                    return self.aliases.get(fn.lambda_function, alias)
                return self.aliases.update(fn.lambda_function, alias, want)
            except Exception as exc:  # AliasCallFailed, or a broken adapter: the same to us
                error = (
                    str(exc) if isinstance(exc, AliasCallFailed) else f"{type(exc).__name__}: {exc}"
                )
            delay = min(MAX_BACKOFF, self.backoff * 2 ** (attempt - 1))
            if attempt >= self.attempts or self.monotonic() - started + delay > self.budget:
                plural = "s" if attempt > 1 else ""
                raise AliasCallFailed(
                    f"{operation} failed after {attempt} attempt{plural}: {error}"
                )
            log.info(
                "aliases: %s of alias %s of %s failed (%s); trying again in %gs",
                operation,
                alias,
                fn.lambda_function,
                error,
                delay,
            )
            self.sleep(delay)

    def _fail(
        self,
        release: ReleaseRecord,
        plan: AliasPlan,
        fn: AliasedFunction,
        want: AliasRouting,
        error: str,
        changed: list[str],
    ) -> AliasSync:
        reason = (
            f"Lambda alias {plan.alias} of {fn.function} ({fn.lambda_function}) could not be"
            f" set to {want.describe()}: {error[:_MAX_ERROR]}"
        )
        previous = self._failed.get(release.id)
        self._failed[release.id] = _Failure(release, self.monotonic(), reason)
        repeated = (
            previous is not None
            and previous.release.row_version == release.row_version
            and previous.message == reason
        )
        if repeated:  # said already, for this very state of the release
            log.warning("aliases: release %s: %s (still)", release.id, reason)
        else:
            not_changed = [f.function for f in plan.functions if f.function not in changed]
            self._note(
                release,
                "alias_failed",
                f"{reason}; changed: {', '.join(changed) or 'none'};"
                f" not changed: {', '.join(not_changed)}",
                {
                    "alias": plan.alias,
                    "function": fn.function,
                    "lambda_function": fn.lambda_function,
                    **want.to_dict(),
                    "error": error,
                    "changed": changed,
                    "not_changed": not_changed,
                },
            )
        if release.phase not in _PAUSABLE:
            return AliasSync.FAILED
        if not self.releases.command(release.id, Command.PAUSE, self.actor, reason):
            return AliasSync.FAILED  # it moved on meanwhile: its new state is kept next time
        # the paused release is tried again after retry_after, or once a person changes it
        paused = self.releases.get(release.id)
        self._failed[release.id] = _Failure(paused, self.monotonic(), reason)
        return AliasSync.PAUSED

    # -- the audit log ---------------------------------------------------------------
    def _note(self, release: ReleaseRecord, kind: str, message: str, data: dict[str, Any]) -> None:
        self.releases.note(release.id, kind, message, self.actor, data)

    def _note_moved(
        self,
        release: ReleaseRecord,
        alias: str,
        fn: AliasedFunction,
        before: AliasRouting,
        after: AliasRouting,
    ) -> None:
        log.info("aliases: release %s: %s of %s -> %s", release.id, alias, fn.function, after)
        self._note(
            release,
            "alias",
            f"Lambda alias {alias} of {fn.function}: {before.describe()} -> {after.describe()}",
            {
                "alias": alias,
                "function": fn.function,
                "lambda_function": fn.lambda_function,
                **after.to_dict(),
                "previous": before.to_dict(),
            },
        )

    def _note_skipped(self, release: ReleaseRecord, plan: AliasPlan) -> None:
        self._noted.add(release.id)
        why = "; ".join(f"{fn}: {reason}" for fn, reason in plan.skipped.items())
        self._note(
            release,
            "alias_skipped",
            f"Lambda alias {plan.alias} is not kept for {', '.join(plan.skipped)} ({why})",
            {"alias": plan.alias, "skipped": dict(plan.skipped)},
        )
