"""The analysis step: every interval, judge each running release's canary against stable.

`AnalysisRunner.run` is called by `Controller.tick` (so only the leader
analyses). For each running release that is judged (`coalmine.core.analysis.judged`:
by default every one), once ``interval`` has passed since its last run (or since traffic
started), it:

1. reads each changed function's metrics over the release's window (from
   the time traffic started to now): the candidate version in the canary
   channel and the baseline version in the stable channel, and judges them
   (`coalmine.core.judge.judge`), each function's sequential tests
   continuing from the state the last run stored; the run's outcome is its
   worst judged function's (a function with no call in either channel is
   idle: noted, not judged), and its evidence gate (`coalmine.core.gate`)
   says whether a step may advance;
2. evaluates the release's alarm sources (Prometheus queries,
   `coalmine.integrations.prometheus`; CloudWatch alarms,
   `coalmine.integrations.cloudwatch`); a firing alarm whose metrics blame
   stable or no one version (an alias-wide CloudWatch alarm) does not roll
   back on its own: it is reported, and the judge decides;
3. folds the verdict into the `Tracker` stored with the previous run (so a
   restarted controller loses nothing) and writes an analysis-run record
   and an ``analysis`` audit event whose message is one readable line;
4. carries out the tracker's action: ``rollback`` after ``failure_limit``
   failed intervals in a row or at once for an attributable alarm (actor
   ``judge``, reason the failing metrics' sentences), ``pause`` after more
   than ``max_inconclusive`` inconclusive intervals with ``inconclusive:
   pause``, or ``pause`` when a step's hold is over and its evidence cannot
   come in time (`coalmine.core.gate.stalled`: ``max_wait`` after the hold,
   or at once when it never can). A rollback goes to the data plane at once
   (the change feed).

The loop asks `evidence_ready` before it feeds a judged release a tick: its
step advances only once the last run opened the gate (DESIGN rule 8). Before
its first run a release with ``idle: clock`` (the judge it gets without
settings) steps by the clock: it is not known yet to serve any call.

All timing is in the store: the window starts at the release's
``started_at``, the next run is due ``interval`` after the last run's time,
and a run's rollback or pause stays unapplied in its record until it is
done. A release's settings are parsed once per process. Settings that no longer parse pause the release and say why:
never a silent pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import httpx

from coalmine.controller.alarms import AlarmWatcher
from coalmine.controller.analysis_settings import ReleaseAnalysis, release_analysis
from coalmine.controller.plane import ControlPlane
from coalmine.core.alarms import AlarmEvaluation, EvaluationState, attributable
from coalmine.core.analysis import AnalysisSettings, IdlePolicy, judged
from coalmine.core.attribution import ReleaseScope, release_scope
from coalmine.core.errors import InvalidInput
from coalmine.core.gate import EvidenceGate, evidence_gate, no_calls, stalled
from coalmine.core.judge import JudgeState, judge
from coalmine.core.machine import Command, EventKind
from coalmine.core.model import Phase
from coalmine.core.ports import AlarmSource, MetricsProvider
from coalmine.core.records import AnalysisRunRecord, ReleaseRecord
from coalmine.core.tracker import Action, Tracker
from coalmine.core.verdict import Outcome, Verdict
from coalmine.metrics.recorder import window_start

__all__ = ["AnalysisRunner", "combine"]

log = logging.getLogger(__name__)


def _inconclusive(reason: str) -> Verdict:
    return Verdict(Outcome.INCONCLUSIVE, (), (reason,), (), 0, 0)


def combine(verdicts: Mapping[str, Verdict]) -> Verdict:
    """One verdict for several functions: the worst outcome of the judged ones, each
    sentence naming its function and metric(s) (``cart latency_p99: canary p99 ...``).

    An idle function (no call in either channel) is not judged: a note says so and it
    sets nothing; when every function is idle the verdict is idle too (inconclusive,
    waiting, `coalmine.core.gate.no_calls` its reason)."""
    idle = [fn for fn, v in verdicts.items() if v.idle]
    judged = {fn: v for fn, v in verdicts.items() if not v.idle}
    outcome = max(
        (v.outcome for v in judged.values()), key=lambda o: o.severity, default=Outcome.PASS
    )
    reasons: list[str] = []
    notes: list[str] = []
    for fn, v in judged.items():
        notes.extend(f"{fn}: {note}" for note in v.notes)
        if v.outcome is not outcome:
            continue
        for sentence in v.reasons:
            names = [m.name for m in v.metrics if m.outcome is outcome and m.reason == sentence]
            whole = not names or (len(names) > 1 and len(names) == len(v.metrics))
            label = fn if whole else f"{fn} {', '.join(names)}"
            reasons.append(f"{label}: {sentence}")
    if idle and judged:
        notes.extend(f"{fn}: {_NOT_JUDGED}" for fn in idle)
    if not verdicts:
        reasons.append("no function changes in this release: nothing to compare")
        outcome = Outcome.INCONCLUSIVE
    elif not judged:
        reasons.append(no_calls(idle))
        outcome = Outcome.INCONCLUSIVE
    unsure = [v for v in judged.values() if v.outcome is Outcome.INCONCLUSIVE]
    return Verdict(
        outcome,
        (),
        tuple(reasons),
        tuple(notes),
        sum(v.canary_requests for v in verdicts.values()),
        sum(v.stable_requests for v in verdicts.values()),
        enough=bool(judged) and all(v.enough for v in judged.values()),
        waiting=outcome is Outcome.INCONCLUSIVE
        and ((not judged and bool(idle)) or (bool(unsure) and all(v.waiting for v in unsure))),
        idle=bool(idle) and not judged,
    )


_NOT_JUDGED = (
    "not judged: no call in either channel since traffic started (its candidate follows"
    " the steps of the functions that serve calls)"
)


class AnalysisRunner:
    """Runs the judge and the release's alarms every interval; see the module docstring.

    ``metrics`` is where per-version metrics come from (by default the
    control plane's `coalmine.controller.metrics.MetricsService`; a release whose
    analysis says ``metrics: cloudwatch`` reads CloudWatch instead); ``transport`` is
    handed to the Prometheus alarms (tests). The runner also runs an `AlarmWatcher`
    over the HTTP-raised alarms on every call.
    """

    def __init__(
        self,
        plane: ControlPlane,
        *,
        metrics: MetricsProvider | None = None,
        clock: Callable[[], float] = time.time,
        actor: str = "judge",
        transport: httpx.BaseTransport | None = None,
        watcher: AlarmWatcher | None = None,
    ) -> None:
        self.releases = plane.releases
        self.catalog = plane.catalog
        self.runs_store = plane.runs
        self.metrics: MetricsProvider = metrics if metrics is not None else plane.metrics
        self.watcher = (
            watcher if watcher is not None else AlarmWatcher(plane.alarms, plane.releases)
        )
        self.clock = clock
        self.actor = actor
        self.transport = transport
        self._settings: dict[str, ReleaseAnalysis | InvalidInput] = {}
        self._open: dict[str, bool] = {}
        """whether each analysed release's evidence gate is open, as of its last run"""
        self._gates: dict[str, EvidenceGate] = {}
        """the gate of each release analysed by this runner's last run of it"""
        self._next_due: float | None = None
        self.runs = 0
        """analysis runs recorded by this runner, for tests and metrics"""

    def next_due_at(self) -> float | None:
        """When the earliest analysis is due, as of the last `run` (None: none is)."""
        return self._next_due

    def evidence_ready(self, release_id: str) -> bool:
        """Whether the judge's last run of ``release_id`` has the evidence a step waits for
        (False before its first run). Only a judged release's steps ask (DESIGN rule 8)."""
        return self._open.get(release_id, False)

    def run(self, now: float | None = None) -> int:
        """Check the alarms, then analyse every running release that is due; the number
        of transitions made (rollbacks and pauses)."""
        made = 0
        try:
            made += self.watcher.check()
        except Exception:
            log.exception("analysis: checking the alarms failed")
        try:
            releases = self.releases.all_active()
        except Exception:
            log.exception("analysis: cannot list the active releases")
            return made
        analysed = [r for r in releases if r.phase is Phase.RUNNING and judged(r.analysis)]
        try:
            last_runs = self.runs_store.last_of([r.id for r in analysed])
        except Exception:
            log.exception("analysis: cannot read the last analysis runs")
            return made
        next_due: float | None = None
        # a release not running yet (pending on a hook) asks too, once it runs
        self._open = {
            r.id: _gate_open(last_runs[r.id]) if r.id in last_runs else self._clock_first(r)
            for r in releases
            if judged(r.analysis)
        }
        for release in analysed:
            try:
                done, due = self._step(release, last_runs.get(release.id), now)
            except Exception:
                log.exception("analysis: release %s: analysis failed", release.id)
                continue
            made += done
            if due is not None and (next_due is None or due < next_due):
                next_due = due
        self._next_due = next_due
        active = {r.id for r in releases}
        self._settings = {k: v for k, v in self._settings.items() if k in active}
        self._gates = {k: v for k, v in self._gates.items() if k in active}
        return made

    def _clock_first(self, release: ReleaseRecord) -> bool:
        """Before its first run: whether a release steps by the clock (``idle: clock``: it is
        not known yet to serve calls)."""
        try:
            return self._spec(release).settings.idle is IdlePolicy.CLOCK
        except InvalidInput:
            return False

    def _now(self, fixed: float | None) -> float:
        return self.clock() if fixed is None else fixed

    def _spec(self, release: ReleaseRecord) -> ReleaseAnalysis:
        """The release's analysis settings, parsed once (they never change)."""
        spec = self._settings.get(release.id)
        if spec is None:
            try:
                parsed = release_analysis(
                    release.analysis,
                    transport=self.transport,
                    scope=lambda namespace: self._scope(release, namespace),
                )
                assert parsed is not None  # only releases with analysis settings come here
                spec = parsed
            except InvalidInput as exc:
                spec = exc
            self._settings[release.id] = spec
        if isinstance(spec, InvalidInput):
            raise spec
        return spec

    def _scope(self, release: ReleaseRecord, namespace: str) -> ReleaseScope:
        """What the release's CloudWatch alarms blame by: its versions and their targets."""
        app = self.catalog.get_app(release.app)
        targets = {f.name: {v.name: v.target for v in f.versions} for f in app.functions}
        return release_scope(release, targets, namespace)

    def _step(
        self, release: ReleaseRecord, last: AnalysisRunRecord | None, fixed: float | None
    ) -> tuple[int, float | None]:
        """Analyse ``release`` if due, after ``last``: (transitions made, when the next run is
        due)."""
        now = self._now(fixed)
        try:
            spec = self._spec(release)
        except InvalidInput as exc:
            reason = f"analysis settings are invalid: {exc}"
            return self._pause(release.id, reason), None
        interval = spec.settings.interval
        if last is not None and not last.applied:
            done = self._carry_out(last)
            if done:
                return done, None
            # moot (the release ended or moved on meanwhile): analysis goes on
        start = _window_start(release)
        due = (last.at if last is not None else start) + interval
        if now < due:
            return 0, due
        run, done = self.analyse(release, spec, now, last=last)
        if not done:
            done = self._stalled(release, spec.settings, run, now)
        return done, (None if done else run.at + interval)

    def _stalled(
        self, release: ReleaseRecord, settings: AnalysisSettings, run: AnalysisRunRecord, now: float
    ) -> int:
        """Pause a release whose step's hold is over when its evidence cannot come in time."""
        hold_end = release.next_action_at
        if release.phase is not Phase.RUNNING or hold_end is None or hold_end > now:
            return 0
        functions = run.results.get("functions", {})
        gate = self._gates.get(release.id)
        if gate is None:  # pragma: no cover - analyse records it
            return 0
        why = stalled(
            gate,
            settings,
            waited=now - hold_end,
            elapsed=max(0.0, now - window_start(_window_start(release))),
            canary_requests={fn: int(v.get("canary_requests", 0)) for fn, v in functions.items()},
            stable_requests={fn: int(v.get("stable_requests", 0)) for fn, v in functions.items()},
        )
        if why is None:
            return 0
        return self._pause(release.id, why)

    def _carry_out(self, run: AnalysisRunRecord) -> int:
        """Carry out the rollback or pause ``run`` decided (now, or on a controller that
        stopped between deciding and doing); transitions made."""
        reason = str(run.results.get("tracker", {}).get("reason") or "")
        if run.action is Action.ROLLBACK:
            done = self.releases.rollback(run.release_id, self.actor, reason or _FAILED)
        else:
            done = self.releases.command(
                run.release_id, Command.PAUSE, self.actor, reason or _INCONCLUSIVE
            )
        self.runs_store.applied(run.id)
        return 1 if done else 0

    def _pause(self, release_id: str, reason: str) -> int:
        return 1 if self.releases.command(release_id, Command.PAUSE, self.actor, reason) else 0

    def _tracker(self, settings: AnalysisSettings, last: AnalysisRunRecord | None) -> Tracker:
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
        release: ReleaseRecord,
        spec: ReleaseAnalysis,
        now: float,
        *,
        last: AnalysisRunRecord | None = None,
    ) -> tuple[AnalysisRunRecord, int]:
        """One analysis run of ``release`` at ``now``: (the stored run, transitions made)."""
        settings = spec.settings
        start = _window_start(release)
        metrics = spec.metrics if spec.metrics is not None else self.metrics
        verdicts = self._verdicts(release, settings, start, now, metrics, last)
        verdict = combine(verdicts)
        gate = evidence_gate(verdicts, settings)
        before = last.results.get("alarms", {}) if last is not None else {}
        alarms, fired, reports = self._alarms(release, spec.alarms, before)
        tracker = self._tracker(settings, last).observe(verdict)
        outcome = verdict.outcome
        message = tracker.reason
        if verdict.idle and gate.open:
            message = f"not judged: {verdict.reason}; the steps go by the strategy's clock"
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
                if state["preexisting"]:
                    message += f"; alarm {name} firing since before the release (not attributed)"
                elif state["preexisting"] is False:
                    message += (
                        f"; alarm {name} firing, not attributable to the candidate by its"
                        " dimensions: the judge decides"
                    )
                else:
                    message += f"; alarm {name} firing, not attributed until known to be new"
        results: dict[str, Any] = {
            "outcome": str(outcome),
            "reason": verdict.reason,
            "notes": list(verdict.notes),
            "functions": {fn: v.to_dict() for fn, v in verdicts.items()},
            "alarms": alarms,
            "tracker": tracker.to_dict(),
            "evidence": gate.to_dict(),
        }
        if tracker.action is Action.CONTINUE and not gate.open and verdict.outcome is Outcome.PASS:
            message += f"; {gate.reason}"
        run = self.runs_store.record(
            release.id,
            window_start=start,
            window_end=now,
            outcome=outcome,
            action=tracker.action,
            results=results,
            message=message,
            actor=self.actor,
            at=now,
            evidence=gate.to_dict(),
        )
        self._open[release.id] = gate.open
        self._gates[release.id] = gate
        self.runs += 1
        log.info("analysis: release %s: %s", release.id, message)
        for text, data in reports:
            self.releases.note(release.id, EventKind.ALARM, text, self.actor, data)
        done = 0 if run.applied else self._carry_out(run)
        return run, done

    def _verdicts(
        self,
        release: ReleaseRecord,
        settings: AnalysisSettings,
        since: float,
        until: float,
        metrics: MetricsProvider,
        last: AnalysisRunRecord | None = None,
    ) -> dict[str, Verdict]:
        """Each changed function's verdict: canary candidate against stable baseline, its
        sequential tests continuing from the last run's state."""
        changed = release.changed
        queries = [
            q
            for fn in changed
            for q in ((fn, release.candidate[fn], "canary"), (fn, release.baseline[fn], "stable"))
        ]
        since = window_start(since)  # the metric window holding the start
        try:
            got = metrics.metrics_for_many(release.app, queries, since=since, until=until)
        except Exception as exc:
            log.exception("analysis: release %s: cannot read the metrics", release.id)
            return {
                fn: _inconclusive(f"metrics unavailable: {exc or type(exc).__name__}")
                for fn in changed
            }
        out: dict[str, Verdict] = {}
        before = last.results.get("functions", {}) if last is not None else {}
        for i, fn in enumerate(changed):
            state = _stored_state(
                release.id, before.get(fn) if isinstance(before, Mapping) else None
            )
            try:
                out[fn] = judge(
                    got[2 * i], got[2 * i + 1], settings, state=state, functions=len(changed)
                )
            except InvalidInput as exc:
                out[fn] = _inconclusive(f"cannot judge: {exc}")
        return out

    def _alarms(
        self, release: ReleaseRecord, sources: tuple[AlarmSource, ...], before: Mapping[str, Any]
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
            elif now.state is EvaluationState.FIRING and now.since is not None:
                # the source says when this firing began: the fix-forward rule needs no more
                preexisting = not attributable(now.since, release.created_at)
            elif now.state is EvaluationState.FIRING and preexisting is None:
                # first seen firing: was it already firing when the release was created?
                past = source.evaluate(at=release.created_at)
                if past.state is not EvaluationState.ERROR:
                    preexisting = past.state is EvaluationState.FIRING
            states[source.name] = {**now.to_dict(), "preexisting": preexisting}
            data = {"alarm": source.name, **now.to_dict()}
            changed = prev.get("state") != now.state
            if now.state is EvaluationState.FIRING:
                if preexisting is False and now.rolls_back:
                    fired.append(now)
                elif preexisting is False:
                    seen = (prev.get("preexisting"), prev.get("blame"), prev.get("since"))
                    if changed or seen != (False, data.get("blame"), now.since):
                        text = (
                            f"alarm {source.name} is in ALARM but not attributable to the"
                            " candidate by its dimensions: no rollback on its own, the judge"
                            f" decides whether the canary is to blame ({now.detail})"
                        )
                        reports.append((text, data))
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


def _stored_state(release_id: str, verdict: object) -> JudgeState | None:
    """A function's sequential state from the last run's verdict (None: start afresh)."""
    if not isinstance(verdict, Mapping) or verdict.get("state") is None:
        return None
    try:
        return JudgeState.from_dict(verdict["state"])
    except InvalidInput as exc:
        log.warning(
            "analysis: release %s: a stored judge state does not parse (%s)", release_id, exc
        )
        return None


def _gate_open(run: AnalysisRunRecord) -> bool:
    evidence = run.results.get("evidence")
    return isinstance(evidence, Mapping) and evidence.get("open") is True


def _window_start(release: ReleaseRecord) -> float:
    """When users first reached the candidate, else when the release was created."""
    return release.started_at if release.started_at is not None else release.created_at


_FAILED = "canary failed analysis"
_INCONCLUSIVE = "analysis inconclusive"
