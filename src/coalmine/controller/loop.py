"""The rollout loop: a thin, idempotent reconcile that drives due releases forward.

`Controller.tick` asks the store which releases are due (their durable timer
``next_action_at`` has come) and feeds each a `Tick`. A hook a transition
asks for is started on the `HookPool` (off the tick, outside any
transaction, within its total deadline); a later tick collects its outcome
and feeds it back as a `HookResult`, so a slow hook delays only its own
release. Every
step is one transaction of `ControlService.advance`, so all timing lives in
the store: a controller killed at any moment and started again continues
exactly where each release was, never skipping and never repeating a step.
Each tick starts with the analysis step (`coalmine.controller.analysis`): the
judge and the alarms, and the rollbacks and pauses they call for (a judged
release's step then advances only once the judge has the evidence it needs:
its tick carries that fact to the state machine); then the
Lambda aliases of releases that changed elsewhere are put where their
releases want them (`coalmine.controller.alias`), as they are after every
transition the loop makes, before it makes the next: a release is never
promoted before its aliases moved.
`Controller.run_forever` adds leader election and sleeps until the next
timer, or until the change feed says something changed (a new release, an
operator's command), without polling in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from coalmine.controller.alias import AliasKeeper, AliasSync
from coalmine.controller.analysis import AnalysisRunner
from coalmine.controller.hook_pool import DEFAULT_WORKERS, Finished, HookPool
from coalmine.controller.plane import ControlPlane
from coalmine.core.errors import Conflict, NotFound, retry_on_conflict
from coalmine.core.machine import Hook, HookResult, Tick
from coalmine.core.ports import HookOutcome, HookRunner, Leadership, ReleaseStore, Transitioned
from coalmine.store.changes import ChangeFeed

__all__ = ["MAX_TRANSITIONS_PER_TICK", "Controller"]

log = logging.getLogger(__name__)

MAX_TRANSITIONS_PER_TICK = 20
"""transitions one release may make in one tick (0-second holds chain within a tick)"""
_REPORT_ATTEMPTS = 3


class Controller:
    """Drives every due release through its strategy, hooks included.

    Only the leader ticks (see `coalmine.controller.leader`); a tick is also
    safe to run concurrently with another controller's: the store lets only
    one writer make each step, the other gets `Conflict` and skips.
    """

    def __init__(
        self,
        plane: ControlPlane,
        *,
        feed: ChangeFeed | None = None,
        leadership: Leadership,
        hooks: HookRunner,
        clock: Callable[[], float] = time.time,
        interval: float = 1.0,
        actor: str = "controller",
        analysis: AnalysisRunner | None = None,
        aliases: AliasKeeper | None = None,
        hook_workers: int = DEFAULT_WORKERS,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self.releases: ReleaseStore = plane.releases
        self.feed = feed
        self.leadership = leadership
        self.hooks = hooks
        self.clock = clock
        self.interval = interval
        self.actor = actor
        self.analysis = analysis if analysis is not None else AnalysisRunner(plane, clock=clock)
        """judges running releases and checks alarms at the start of every tick"""
        self.aliases = aliases if aliases is not None else AliasKeeper(plane, actor=actor)
        """keeps each release's Lambda alias where the release wants it"""
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self.hook_pool = HookPool(hooks, workers=hook_workers, on_done=self.wake)
        """runs the hooks transitions ask for, off the tick"""
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.ticks = 0
        """completed ticks (as leader), for tests and metrics"""

    # -- one reconcile ---------------------------------------------------------
    def tick(self, now: float | None = None) -> int:
        """Advance every due release as far as it may go now; the number of transitions made.

        With ``now`` given, every event of the tick happens at that time (a
        test's clock); otherwise each event is stamped with the clock when it
        is fed, so a slow hook of one release does not shorten another's hold.
        Ticking twice at the same time makes no second change.
        """
        made = 0
        try:
            made += self.analysis.run(now)
        except Exception:
            log.exception("controller: analysis failed")
        made += self.aliases.reconcile()  # never raises
        for finished in self.hook_pool.finished():
            try:
                made += self._report_hook(finished, now)
            except NotFound:
                log.info("controller: release %s is gone", finished.release_id)
            except Exception:
                log.exception(
                    "controller: release %s: reporting its hook failed", finished.release_id
                )
        try:
            due = self.releases.due(self._now(now))
        except Exception:
            log.exception("controller: cannot list due releases")
            return 0
        for release_id in due:
            if self.hook_pool.running(release_id):
                continue  # its hook's outcome decides what comes next
            try:
                made += self._drive(release_id, now)
            except Conflict as exc:
                log.info("controller: release %s: another writer acted first (%s)", release_id, exc)
            except NotFound:
                log.info("controller: release %s is gone", release_id)
            except Exception:
                log.exception("controller: release %s: advancing failed", release_id)
        self.ticks += 1
        return made

    def _now(self, fixed: float | None) -> float:
        return self.clock() if fixed is None else fixed

    def _drive(self, release_id: str, fixed: float | None) -> int:
        """Advance one release while it is due (bounded); the number of transitions made."""
        made = 0
        if not self.aliases.ready(release_id):
            log.info("controller: release %s: waiting for its Lambda aliases to move", release_id)
            return 0
        while made < MAX_TRANSITIONS_PER_TICK:
            at = self._now(fixed)
            # a judged release's step waits for the judge's evidence (DESIGN rule 8)
            tick = Tick(at, evidence=self.analysis.evidence_ready(release_id))
            try:
                outcome = self._advance(release_id, tick)
            except Conflict:
                if not made:
                    raise
                # another controller took the next step; keep the count of ours
                log.info("controller: release %s: another writer took the next step", release_id)
                break
            if outcome is None:
                break
            made += 1
            kept = self.aliases.keep(outcome.release)
            made += kept is AliasSync.PAUSED
            if not self._may_go_on(release_id, kept):
                break
            hook = outcome.transition.run_hook
            if hook is not None:
                made += self._start_hook(outcome, hook, fixed)
                break
            due = outcome.release.next_action_at
            if due is None or due > at:
                break
        else:
            log.warning(
                "controller: release %s made %d transitions in one tick; continuing next tick",
                release_id,
                made,
            )
        return made

    def _may_go_on(self, release_id: str, kept: AliasSync) -> bool:
        """Whether to drive a release on once its Lambda aliases were kept: not when it was
        paused for them, nor while it is promoting and they did not move. Other failures
        do not hold a release up (a rollback always completes); they are retried."""
        return kept is not AliasSync.PAUSED and self.aliases.ready(release_id)

    def _advance(self, release_id: str, event: Tick | HookResult) -> Transitioned | None:
        outcome = self.releases.advance(release_id, event, actor=self.actor)
        if outcome is not None:
            log.info(
                "controller: release %s: %s: %s",
                release_id,
                outcome.transition.kind,
                outcome.transition.message,
            )
        return outcome

    def _report(self, release_id: str, result: HookResult) -> Transitioned | None:
        """Feed a hook's result back; retried on `Conflict`, so a concurrent edit of the
        release (an operator's command) does not lose it. A result the release no
        longer waits for is stale and changes nothing.
        """
        return retry_on_conflict(
            lambda: self._advance(release_id, result),
            attempts=_REPORT_ATTEMPTS,
            on_retry=lambda _: log.info(
                "controller: release %s changed meanwhile; reporting again", release_id
            ),
        )

    def _start_hook(self, outcome: Transitioned, hook: Hook, fixed: float | None) -> int:
        """Start the hook a transition asks for; the transitions made meanwhile (none,
        unless the release has no such hook, which fails it at once: rollback wins)."""
        release = outcome.release
        spec = release.hooks.get(hook)
        if spec is None:  # the machine only asks for hooks the release has
            missing = HookOutcome(False, f"{hook} hook is not configured for release {release.id}")
            return self._report_hook(Finished(release.id, hook, missing), fixed)
        if not self.hook_pool.start(release, hook, spec):
            log.info("controller: release %s: a hook of it is still running", release.id)
        return 0

    def _report_hook(self, finished: Finished, fixed: float | None) -> int:
        """Feed a finished hook's outcome back; the transitions made (a stale one: none).
        What follows (the first step, the promotion, the rollback) is driven as the
        release is due, in this tick."""
        result = finished.outcome
        level = logging.INFO if result.passed else logging.WARNING
        log.log(level, "controller: release %s: %s", finished.release_id, result.detail)
        at = self._now(fixed)
        reported = self._report(
            finished.release_id, HookResult(finished.hook, result.passed, at, result.detail)
        )
        if reported is None:
            return 0  # the hook's result was stale: the release moved on meanwhile
        kept = self.aliases.keep(reported.release)
        return 1 + (kept is AliasSync.PAUSED)

    def wait_for_hooks(self, timeout: float) -> bool:
        """Wait until a running hook finishes or reaches its deadline (at most ``timeout``
        seconds); whether one did. The next `tick` reports it."""
        return self.hook_pool.wait(timeout)

    # -- the loop ------------------------------------------------------------
    def start(self) -> None:
        """Run `run_forever` in a daemon thread."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self.run_forever, name="coalmine-controller", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop (after the tick in progress) and give up leadership."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("controller: the loop did not stop within %gs", timeout)
        self.leadership.release()
        self.aliases.close()
        self.hook_pool.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Tick now rather than at the next timer (e.g. after an operator's command)."""
        self._wake.set()

    def _on_change(self, _app: str) -> None:
        self._wake.set()

    def run_forever(self) -> None:
        """Lead or stand by until `stop`; as leader, tick at each due time or change."""
        if self.feed is not None and self._unsubscribe is None:
            self._unsubscribe = self.feed.subscribe(self._on_change)
        leading = False
        standing_by = False
        try:
            while not self._stopping.is_set():
                try:
                    held = self.leadership.try_acquire()
                except Exception:
                    log.exception("controller: leader election failed")
                    held = False
                if not held:
                    if leading:
                        log.warning("controller: lost leadership; standing by")
                    elif not standing_by:
                        log.info("controller: another controller leads; standing by")
                    leading, standing_by = False, True
                    self._stopping.wait(self.interval)
                    continue
                if not leading:
                    log.info("controller: acquired leadership")
                    leading, standing_by = True, False
                self._wake.clear()  # changes from here on wake the next wait
                started = self.clock()
                made = self.tick()
                self._wake.wait(self._delay(started, made))
        finally:
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            if leading:
                log.info("controller: released leadership")
            self.leadership.release()

    def _delay(self, started: float, made: int) -> float:
        """Seconds until the next timer, at most `interval`."""
        try:
            due = self.releases.next_due_at()
        except Exception:
            log.exception("controller: cannot read the next due time")
            return self.interval
        analysis_due = self.analysis.next_due_at()
        if analysis_due is not None and (due is None or analysis_due < due):
            due = analysis_due
        hook_due = self.hook_pool.next_deadline()
        if hook_due is not None:  # a hook past its deadline is failed at the next tick
            hook_at = self.clock() + max(0.0, hook_due - time.monotonic())
            if due is None or hook_at < due:
                due = hook_at
        if due is None:
            return self.interval
        if due <= started and not made:
            # due before the tick began, yet the tick made no progress (another
            # writer won, or an error): wait rather than spin
            return self.interval
        return max(0.0, min(due - self.clock(), self.interval))
