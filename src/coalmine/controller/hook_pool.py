"""`HookPool`: runs lifecycle hooks off the controller's tick, each within a total deadline.

The tick only starts a hook (`HookPool.start`) and, on a later tick,
collects its `HookOutcome` (`HookPool.finished`); the hook itself runs on a
small bounded pool of worker threads. So a hook endpoint that answers
slowly, or drips its answer a byte at a time, holds up its own release and
nothing else: every other release's steps, rollbacks and the judge go on at
the controller's pace.

Each hook has a total deadline (`budget`): all its attempts, the pauses
between them and every read included, on the wall clock. A hook still
running at its deadline fails ("did not finish within N s"); its worker is
abandoned (a thread cannot be killed) and whatever it finds later is
dropped. The deadline is shorter than the store's hook timer
(`coalmine.core.records.HookConfig.deadline`), so a running controller
always reports a hook before the store would start it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from coalmine.core.attempts import MAX_BACKOFF
from coalmine.core.machine import Hook
from coalmine.core.ports import HookOutcome, HookRunner
from coalmine.core.records import HookConfig, ReleaseRecord

__all__ = ["DEFAULT_WORKERS", "GRACE", "Finished", "HookPool", "budget"]

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 4
"""hooks that may run at once; more wait for a free worker (their deadline runs meanwhile)"""
GRACE = 1.0
"""seconds past its `budget` a hook is given before the pool fails it: a runner that
times itself out says more precisely what went wrong"""


def budget(spec: HookConfig) -> float:
    """Seconds a hook may take in all: each attempt's ``timeout`` and the longest pauses
    between attempts. With `GRACE`, always below ``spec.deadline`` (the store's timer)."""
    return spec.timeout * (spec.retries + 1) + MAX_BACKOFF * spec.retries


@dataclass(frozen=True, slots=True)
class Finished:
    """A hook that finished (or ran out of time): what to report to its release."""

    release_id: str
    hook: Hook
    outcome: HookOutcome


@dataclass(slots=True)
class _Running:
    hook: Hook
    spec: HookConfig
    deadline: float
    future: Future[HookOutcome]


class HookPool:
    """Runs ``runner``'s hooks on at most ``workers`` threads (see the module).

    At most one hook runs per release. ``on_done`` is called (from a worker)
    when a hook finishes, e.g. to wake the controller so that it reports the
    outcome at once rather than at its next timer.
    """

    def __init__(
        self,
        runner: HookRunner,
        *,
        workers: int = DEFAULT_WORKERS,
        on_done: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if workers < 1:
            raise ValueError(f"a hook pool needs at least one worker, got {workers}")
        self.runner = runner
        self.on_done = on_done
        self._clock = clock
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._running: dict[str, _Running] = {}
        self._cond = threading.Condition()

    def start(self, release: ReleaseRecord, hook: Hook, spec: HookConfig) -> bool:
        """Start ``hook`` of ``release``; False if a hook of that release still runs."""
        with self._cond:
            if release.id in self._running:
                return False
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    self._workers, thread_name_prefix="coalmine-hook"
                )
            future = self._executor.submit(self._run, release, hook, spec)
            self._running[release.id] = _Running(
                hook, spec, self._clock() + budget(spec) + GRACE, future
            )
        future.add_done_callback(self._done)
        return True

    def _run(self, release: ReleaseRecord, hook: Hook, spec: HookConfig) -> HookOutcome:
        try:
            return self.runner.run(release, hook, spec)
        except Exception as exc:  # a broken runner fails the hook: rollback wins
            log.exception("controller: release %s: %s hook runner failed", release.id, hook)
            return HookOutcome(False, f"{hook} hook {spec.where} could not be run: {exc}")

    def _done(self, _future: Future[HookOutcome]) -> None:
        with self._cond:
            self._cond.notify_all()
        if self.on_done is not None:
            self.on_done()

    def running(self, release_id: str) -> bool:
        """Whether a hook of this release is running (and not yet collected)."""
        with self._cond:
            return release_id in self._running

    def __len__(self) -> int:
        with self._cond:
            return len(self._running)

    def finished(self) -> list[Finished]:
        """The hooks that finished or ran past their deadline since the last call."""
        now = self._clock()
        done: list[Finished] = []
        with self._cond:
            for release_id, run in list(self._running.items()):
                if run.future.done():
                    outcome = run.future.result()
                elif now >= run.deadline:
                    run.future.cancel()  # not started yet (all workers busy): never start it
                    outcome = HookOutcome(
                        False,
                        f"{run.hook} hook {run.spec.where} did not finish within"
                        f" {budget(run.spec):g}s",
                    )
                else:
                    continue
                del self._running[release_id]
                done.append(Finished(release_id, run.hook, outcome))
        return done

    def next_deadline(self) -> float | None:
        """The earliest deadline of a running hook (on this pool's clock), if any."""
        with self._cond:
            return min((r.deadline for r in self._running.values()), default=None)

    def wait(self, timeout: float) -> bool:
        """Wait until some running hook finishes or reaches its deadline (at most ``timeout``
        seconds); whether one did. For tests and shutdown."""
        end = self._clock() + timeout
        with self._cond:
            while self._running:
                now = self._clock()
                if any(r.future.done() or now >= r.deadline for r in self._running.values()):
                    return True
                first = min(r.deadline for r in self._running.values())
                left = min(end, first) - now
                if end <= now:
                    return False
                self._cond.wait(max(0.0, left))
            return False

    def close(self) -> None:
        """Drop every running hook (its result is not waited for); a later `start` starts
        afresh. A dropped hook runs again once the store's hook timer runs out."""
        with self._cond:
            self._running.clear()
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
