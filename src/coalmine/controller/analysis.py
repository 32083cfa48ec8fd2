"""The analysis step: every interval, judge each running release's canary against stable.

`AnalysisRunner.run` is called by `Controller.tick` (so only the leader
analyses). For each running release whose ``analysis`` settings are not
empty, once ``interval`` has passed since its last run (or since traffic
started), it:

1. reads each changed function's metrics over the release's window (from
   the time traffic started to now): the candidate version in the canary
   channel and the baseline version in the stable channel, and judges them
   (`coalmine.core.judge.judge`); the run's outcome is its worst function's;
2. evaluates the release's Prometheus alarms (`coalmine.controller.alarms`);
3. folds the verdict into the `Tracker` stored with the previous run (so a
   restarted controller loses nothing) and writes an analysis-run record
   and an ``analysis`` audit event whose message is one readable line;
4. carries out the tracker's action: ``rollback`` after ``failure_limit``
   failed intervals in a row or at once for an attributable alarm (actor
   ``judge``, reason the failing metrics' sentences), ``pause`` after more
   than ``max_inconclusive`` inconclusive intervals with ``inconclusive:
   pause``. A rollback goes to the data plane at once (the change feed).

All timing is in the store: the next run is due ``interval`` after the last
run's time. Settings that no longer parse pause the release and say why:
never a silent pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from coalmine.controller.alarms import (
    AlarmEvaluation,
    AlarmSource,
    AlarmWatcher,
    EvaluationState,
    parse_alarms,
    roll_back,
)
from coalmine.core.analysis import AnalysisSettings
from coalmine.core.errors import Conflict, InvalidInput
from coalmine.core.histogram import VersionMetrics
from coalmine.core.judge import Action, Outcome, Tracker, Verdict, judge
from coalmine.core.machine import Command, EventKind, InvalidTransition
from coalmine.core.model import Phase
from coalmine.metrics.recorder import window_start

if TYPE_CHECKING:
    from coalmine.controller.schemas import AnalysisRunRead, ReleaseRead
    from coalmine.controller.service import ControlService

__all__ = [
    "AnalysisRunner",
    "MetricsSource",
    "ReleaseAnalysis",
    "combine",
    "release_analysis",
]

log = logging.getLogger(__name__)
_ATTEMPTS = 3


class MetricsSource(Protocol):
    """Per-version metrics over a time window (`ControlService.metrics_for` is one)."""

    def metrics_for(
        self,
        app: str,
        function: str,
        version: str,
        channel: str,
        *,
        since: float,
        until: float | None = None,
    ) -> VersionMetrics: ...


@dataclass(frozen=True, slots=True)
class ReleaseAnalysis:
    """A release's ``analysis`` object, read: the judge's settings and the alarms."""

    settings: AnalysisSettings
    alarms: tuple[AlarmSource, ...] = ()


def release_analysis(
    spec: Mapping[str, Any] | None, *, transport: httpx.BaseTransport | None = None
) -> ReleaseAnalysis | None:
    """Read a release's ``analysis`` object; None when it is empty (no analysis).

    Every field of `AnalysisSettings.parse`, plus ``alarms`` (a list of
    Prometheus alarms, see `coalmine.controller.alarms.parse_alarms`).
    Raises `InvalidInput` naming the problem.
    """
    if spec is None or (isinstance(spec, Mapping) and not spec):
        return None
    if not isinstance(spec, Mapping):
        raise InvalidInput('analysis must be an object like {"interval": "1m", ...}')
    rest = {k: v for k, v in spec.items() if k != "alarms"}
    try:
        settings = AnalysisSettings.parse(rest)
        alarms = parse_alarms(spec.get("alarms"), transport=transport)
    except InvalidInput as exc:
        raise InvalidInput(f"analysis: {exc}") from None
    return ReleaseAnalysis(settings, alarms)


def _inconclusive(reason: str) -> Verdict:
    return Verdict(Outcome.INCONCLUSIVE, (), (reason,), (), 0, 0)


def combine(verdicts: Mapping[str, Verdict]) -> Verdict:
    """One verdict for several functions: the worst outcome, each sentence naming its
    function and metric(s) (``cart latency_p99: canary p99 ...``)."""
    outcome = max(
        (v.outcome for v in verdicts.values()), key=lambda o: o.severity, default=Outcome.PASS
    )
    reasons: list[str] = []
    notes: list[str] = []
    for fn, v in verdicts.items():
        notes.extend(f"{fn}: {note}" for note in v.notes)
        if v.outcome is not outcome:
            continue
        for sentence in v.reasons:
            names = [m.name for m in v.metrics if m.outcome is outcome and m.reason == sentence]
            whole = not names or (len(names) > 1 and len(names) == len(v.metrics))
            label = fn if whole else f"{fn} {', '.join(names)}"
            reasons.append(f"{label}: {sentence}")
    if not verdicts:
        reasons.append("no function changes in this release: nothing to compare")
        outcome = Outcome.INCONCLUSIVE
    return Verdict(
        outcome,
        (),
        tuple(reasons),
        tuple(notes),
        sum(v.canary_requests for v in verdicts.values()),
        sum(v.stable_requests for v in verdicts.values()),
    )


class AnalysisRunner:
    """Runs the judge and the release's alarms every interval; see the module docstring.

    ``metrics`` defaults to the service (`ControlService.metrics_for`);
    ``transport`` is handed to the Prometheus alarms (tests). The runner
    also runs an `AlarmWatcher` over the HTTP-raised alarms on every call.
    """

    def __init__(
        self,
        service: ControlService,
        *,
        metrics: MetricsSource | None = None,
        clock: Callable[[], float] = time.time,
        actor: str = "judge",
        transport: httpx.BaseTransport | None = None,
        watcher: AlarmWatcher | None = None,
    ) -> None:
        self.service = service
        self.metrics: MetricsSource = metrics if metrics is not None else service
        self.clock = clock
        self.actor = actor
        self.transport = transport
        self.watcher = watcher if watcher is not None else AlarmWatcher(service)
        self._started: dict[str, float] = {}
        self._next_due: float | None = None
        self.runs = 0
        """analysis runs recorded by this runner, for tests and metrics"""

    def next_due_at(self) -> float | None:
        """When the earliest analysis is due, as of the last `run` (None: none is)."""
        return self._next_due

    def run(self, now: float | None = None) -> int:
        """Check the alarms, then analyse every running release that is due; the number
        of transitions made (rollbacks and pauses)."""
        made = 0
        try:
            made += self.watcher.check()
        except Exception:
            log.exception("analysis: checking the alarms failed")
        try:
            releases = self.service.active_releases()
        except Exception:
            log.exception("analysis: cannot list the active releases")
            return made
        next_due: float | None = None
        for release in releases:
            if release.phase != Phase.RUNNING or not release.analysis:
                continue
            try:
                done, due = self._step(release, now)
            except Exception:
                log.exception("analysis: release %s: analysis failed", release.id)
                continue
            made += done
            if due is not None and (next_due is None or due < next_due):
                next_due = due
        self._next_due = next_due
        running = {r.id for r in releases}
        self._started = {k: v for k, v in self._started.items() if k in running}
        return made

    def _now(self, fixed: float | None) -> float:
        return self.clock() if fixed is None else fixed

    def _step(self, release: ReleaseRead, fixed: float | None) -> tuple[int, float | None]:
        """Analyse ``release`` if due: (transitions made, when the next run is due)."""
        now = self._now(fixed)
        try:
            spec = release_analysis(release.analysis, transport=self.transport)
        except InvalidInput as exc:
            done = self._command(release.id, Command.PAUSE, f"analysis settings are invalid: {exc}")
            return done, None
        assert spec is not None
        interval = spec.settings.interval
        last = self.service.last_analysis_run(release.id)
        if last is not None:
            pending = self._unfinished(release, last)
            if pending:
                return pending, None
        start = self._window_start(release)
        due = (last.at if last is not None else start) + interval
        if now < due:
            return 0, due
        run, done = self.analyse(release, spec, now, last=last, window_start=start)
        return done, (None if done else run.at + interval)

    def _unfinished(self, release: ReleaseRead, last: AnalysisRunRead) -> int:
        """Carry out a rollback or pause that the last run decided but that did not happen
        (the controller stopped between the two); transitions made."""
        if last.action == Action.ROLLBACK:
            reason = str(last.results.get("tracker", {}).get("reason") or "canary failed analysis")
            return 1 if roll_back(self.service, release.id, self.actor, reason) else 0
        if last.action != Action.PAUSE:
            return 0
        after = last.results.get("event_id")
        if isinstance(after, int):
            later = self.service.events(release_id=release.id, after=after, limit=100)
            if any(e.kind == EventKind.PAUSED for e in later):
                return 0  # paused, then resumed by an operator: analysis goes on
        reason = str(last.results.get("tracker", {}).get("reason") or "analysis inconclusive")
        return self._command(release.id, Command.PAUSE, reason)

    def _window_start(self, release: ReleaseRead) -> float:
        """When traffic started (the ``started`` event), else when the release was created."""
        cached = self._started.get(release.id)
        if cached is not None:
            return cached
        for ev in self.service.events(release_id=release.id, limit=20):
            if ev.kind == EventKind.STARTED:
                self._started[release.id] = ev.at
                return ev.at
        return release.created_at

    def _tracker(self, settings: AnalysisSettings, last: AnalysisRunRead | None) -> Tracker:
        state = last.results.get("tracker") if last is not None else None
        if not isinstance(state, Mapping):
            return Tracker.start(settings)
        try:
            tracker = Tracker.from_dict(state)
        except InvalidInput:
            log.warning("analysis: a stored tracker does not parse; starting afresh")
            return Tracker.start(settings)
        if tracker.action is Action.PAUSE:
            # the release paused, and runs again: an operator resumed it
            tracker = replace(tracker, consecutive_inconclusive=0, action=Action.CONTINUE)
        return tracker

    def analyse(
        self,
        release: ReleaseRead,
        spec: ReleaseAnalysis,
        now: float,
        *,
        last: AnalysisRunRead | None = None,
        window_start: float | None = None,
    ) -> tuple[AnalysisRunRead, int]:
        """One analysis run of ``release`` at ``now``: (the stored run, transitions made)."""
        settings = spec.settings
        start = window_start if window_start is not None else self._window_start(release)
        verdicts = {fn: self._judge(release, fn, settings, start, now) for fn in release.changed}
        verdict = combine(verdicts)
        before = last.results.get("alarms", {}) if last is not None else {}
        alarms, fired, reports = self._alarms(release, spec.alarms, before)
        tracker = self._tracker(settings, last).observe(verdict)
        outcome = verdict.outcome
        message = tracker.reason
        if fired:
            reason = "; ".join(f"alarm {e.name} fired: {e.detail}" for e in fired)
            message = f"{reason}; judge: {tracker.reason}"
            tracker = replace(tracker, action=Action.ROLLBACK, reason=reason)
            outcome = Outcome.FAIL
        for name, state in alarms.items():
            if state["state"] == EvaluationState.ERROR:
                message += f"; alarm {name} could not be evaluated (no rollback)"
            elif state["state"] == EvaluationState.FIRING and not any(
                e.name == name for e in fired
            ):
                message += (
                    f"; alarm {name} firing since before the release (not attributed)"
                    if state["preexisting"]
                    else f"; alarm {name} firing, not attributed until known to be new"
                )
        results: dict[str, Any] = {
            "outcome": str(outcome),
            "reason": verdict.reason,
            "notes": list(verdict.notes),
            "functions": {fn: v.to_dict() for fn, v in verdicts.items()},
            "alarms": alarms,
            "tracker": tracker.to_dict(),
        }
        run = self.service.record_analysis_run(
            release.id,
            window_start=start,
            window_end=now,
            outcome=str(outcome),
            action=str(tracker.action),
            results=results,
            message=message,
            actor=self.actor,
            at=now,
        )
        self.runs += 1
        log.info("analysis: release %s: %s", release.id, message)
        for text, data in reports:
            self.service.record(release.id, str(EventKind.ALARM), text, self.actor, data)
        done = 0
        if tracker.action is Action.ROLLBACK:
            done = 1 if roll_back(self.service, release.id, self.actor, tracker.reason) else 0
        elif tracker.action is Action.PAUSE:
            done = self._command(release.id, Command.PAUSE, tracker.reason)
        return run, done

    def _judge(
        self,
        release: ReleaseRead,
        fn: str,
        settings: AnalysisSettings,
        since: float,
        until: float,
    ) -> Verdict:
        since = window_start(since)  # the metric window holding the start
        try:
            canary = self.metrics.metrics_for(
                release.app, fn, release.candidate[fn], "canary", since=since, until=until
            )
            stable = self.metrics.metrics_for(
                release.app, fn, release.baseline[fn], "stable", since=since, until=until
            )
        except Exception as exc:
            log.exception("analysis: release %s: cannot read the metrics of %s", release.id, fn)
            return _inconclusive(f"metrics unavailable: {exc or type(exc).__name__}")
        try:
            return judge(canary, stable, settings)
        except InvalidInput as exc:
            return _inconclusive(f"cannot judge: {exc}")

    def _alarms(
        self, release: ReleaseRead, sources: tuple[AlarmSource, ...], before: Mapping[str, Any]
    ) -> tuple[dict[str, dict[str, Any]], list[AlarmEvaluation], list[tuple[str, dict[str, Any]]]]:
        """Evaluate each alarm: (states to store, attributable firings, events to write)."""
        states: dict[str, dict[str, Any]] = {}
        fired: list[AlarmEvaluation] = []
        reports: list[tuple[str, dict[str, Any]]] = []
        for source in sources:
            prev = before.get(source.name)
            prev = prev if isinstance(prev, Mapping) else {}
            now = source.evaluate()
            preexisting = prev.get("preexisting")
            if now.state is EvaluationState.OK:
                preexisting = False
            elif now.state is EvaluationState.FIRING and preexisting is None:
                # first seen firing: was it already firing when the release was created?
                past = source.evaluate(at=release.created_at)
                if past.state is not EvaluationState.ERROR:
                    preexisting = past.state is EvaluationState.FIRING
            states[source.name] = {**now.to_dict(), "preexisting": preexisting}
            data = {"alarm": source.name, **now.to_dict()}
            changed = prev.get("state") != now.state
            if now.state is EvaluationState.FIRING:
                if preexisting is False:
                    fired.append(now)
                elif changed or prev.get("preexisting") != preexisting:
                    text = (
                        f"alarm {source.name} was already firing when release {release.id} was"
                        f" created: {now.detail}; not attributed to the canary, no rollback"
                        if preexisting
                        else f"alarm {source.name} is firing ({now.detail}) but whether it was"
                        " firing before the release is unknown: not attributed, no rollback yet"
                    )
                    reports.append((text, data))
            elif now.state is EvaluationState.ERROR and changed:
                text = (
                    f"alarm {source.name} could not be evaluated: {now.detail}"
                    " (not attributable to the canary: no rollback)"
                )
                reports.append((text, data))
            elif now.state is EvaluationState.OK and prev.get("state") not in (None, "ok"):
                reports.append((f"alarm {source.name} is OK: {now.detail}", data))
        return states, fired, reports

    def _command(self, release_id: str, command: Command, reason: str) -> int:
        """Pause (or another command) as the judge, retrying on a concurrent change;
        transitions made (0 when the phase no longer allows it)."""
        for attempt in range(_ATTEMPTS):
            try:
                self.service.operate(release_id, command, self.actor, reason)
            except Conflict:
                if attempt == _ATTEMPTS - 1:
                    raise
                continue
            except InvalidTransition as exc:
                log.info("analysis: release %s: not %s: %s", release_id, command, exc)
                return 0
            log.warning("analysis: release %s: %s: %s", release_id, command, reason)
            return 1
        return 0  # pragma: no cover - the loop returns or raises
