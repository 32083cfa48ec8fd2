"""Analysis runs: one record per interval the judge looked at a release.

A run stores the verdict, the alarm evaluations, the tracker's state and the
action it called for; ``applied`` says whether that rollback or pause has
been carried out, so a controller that stopped between deciding and doing
finishes the job on its next tick without reading the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coalmine.core.machine import EventKind
from coalmine.core.records import AnalysisRunRecord
from coalmine.core.tracker import Action
from coalmine.core.verdict import Outcome
from coalmine.store.models import AnalysisRunRow
from coalmine.store.uow import UnitOfWork

__all__ = ["AnalysisRunService"]


class AnalysisRunService:
    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow

    def record(
        self,
        release_id: str,
        *,
        window_start: float,
        window_end: float,
        outcome: Outcome,
        action: Action,
        results: Mapping[str, Any],
        message: str,
        actor: str = "judge",
        at: float | None = None,
        evidence: Mapping[str, Any] | None = None,
    ) -> AnalysisRunRecord:
        """Store one analysis run and its ``analysis`` audit event in one transaction.

        A run whose action is a rollback or a pause starts unapplied (`applied`).
        ``evidence`` (the evidence gate: each metric's evidence against what it needs)
        goes in the event's data too, for ``release status``.
        """
        with self.uow() as w:
            row = w.releases.get(release_id)
            app = w.apps.by_id(row.app_id)
            run = w.runs.add(
                AnalysisRunRow(
                    release_id=row.id,
                    at=w.clock() if at is None else at,
                    window_start=window_start,
                    window_end=window_end,
                    outcome=str(outcome),
                    results=dict(results),
                    action=str(action),
                    applied=action is Action.CONTINUE,
                )
            )
            ev = w.event(
                app,
                actor,
                EventKind.ANALYSIS,
                message,
                release=row,
                data={
                    "run": run.id,
                    "outcome": str(outcome),
                    "action": str(action),
                    **({"evidence": dict(evidence)} if evidence is not None else {}),
                },
            )
            w.session.flush()
            run.results = {**run.results, "event_id": ev.id}
            return w.runs.record(run)

    def applied(self, run_id: int) -> None:
        """The run's rollback or pause was carried out (or is moot)."""
        with self.uow() as w:
            run = w.runs.get(run_id)
            if run is not None:
                run.applied = True

    def of_release(
        self, release_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[AnalysisRunRecord]:
        """A release's analysis runs, oldest first."""
        with self.uow() as w:
            w.releases.get(release_id)
            return [w.runs.record(r) for r in w.runs.page(release_id, after=after, limit=limit)]

    def last_of(self, release_ids: list[str]) -> dict[str, AnalysisRunRecord]:
        """The latest run of each release that has one, in one read."""
        if not release_ids:
            return {}
        with self.uow() as w:
            return {r.release_id: w.runs.record(r) for r in w.runs.last_of(release_ids)}

    def counts(self) -> list[tuple[str, Outcome, int]]:
        """How many runs the store holds per app and outcome (the Prometheus counter)."""
        with self.uow() as w:
            return [(app, Outcome(outcome), n) for app, outcome, n in w.runs.counts()]

    def last(self, release_id: str) -> AnalysisRunRecord | None:
        with self.uow() as w:
            run = w.runs.last(release_id)
            return w.runs.record(run) if run is not None else None
