"""HTTP-raised alarms: store each notice's state, roll back what it calls for, re-check every tick.

``POST /v1/alarms`` reads a notice (`coalmine.controller.alarm_notice`);
`AlarmService.raise_alarm` stores the alarm's state and applies the pure
fix-forward rule (`coalmine.core.alarms.notice_action`): an alarm that
started firing once the app's active release existed rolls it back at once;
one already firing before is reported on the release, once. `AlarmWatcher`
re-checks the stored alarms every controller tick, so a rollback lost to a
crash between storing and rolling back is made on the next tick.
"""

from __future__ import annotations

import logging

from coalmine.controller.releases import ReleaseService
from coalmine.controller.schemas import AlarmHandled, AlarmRead
from coalmine.core.alarms import (
    alarm_actor,
    attributable,
    firing_before,
    notice_action,
    parse_state,
    rollback_reason,
    validate_alarm_name,
)
from coalmine.core.machine import EventKind
from coalmine.core.model import ACTIVE_PHASES
from coalmine.core.records import AlarmRecord
from coalmine.store.models import AlarmRow
from coalmine.store.uow import UnitOfWork

__all__ = ["AlarmService", "AlarmWatcher"]

log = logging.getLogger(__name__)


class AlarmService:
    def __init__(self, uow: UnitOfWork, releases: ReleaseService) -> None:
        self.uow = uow
        self.releases = releases

    def raise_alarm(
        self, app_name: str, name: str, state: str, reason: str, actor: str
    ) -> AlarmHandled:
        """Record an alarm's state; a transition to ALARM during a release rolls it back.

        An alarm that was already firing when the app's active release was
        created is reported on the release and does not roll it back (see
        `coalmine.core.alarms.notice_action`).
        """
        name = validate_alarm_name(name)
        the_state = parse_state(state)
        with self.uow() as w:
            app = w.apps.get(app_name, lock=True)
            now = w.clock()
            row = w.alarms.find(app.name, name)
            changed = row is None or row.state != the_state
            if row is None:
                row = w.alarms.add(AlarmRow(app=app.name, name=name, since=now))
            elif changed:
                row.since = now
            row.state = str(the_state)
            row.reason = reason
            row.updated_at = now
            active = w.releases.active(app)
            release = w.releases.record(active, app.name) if active is not None else None
            decision = notice_action(w.alarms.record(row), changed, release)
            if decision.event:
                w.event(
                    app,
                    actor,
                    EventKind.ALARM,
                    decision.message,
                    release=active,
                    data={"alarm": name, "state": str(the_state), "since": row.since},
                )
                if decision.action == "not_attributed" and active is not None:
                    row.reported_release = active.id
            w.session.flush()
            alarm = w.alarms.record(row)
        action = decision.action
        message = decision.message
        if action == "rolled_back":
            assert release is not None
            if not self.releases.rollback(release.id, alarm_actor(name), message):
                action, message = "none", f"{message}; release {release.id} had already ended"
        return AlarmHandled(
            alarm=AlarmRead.of(alarm),
            changed=changed,
            action=action,
            release_id=release.id if release is not None else None,
            message=message,
        )

    def of_app(self, app_name: str) -> list[AlarmRecord]:
        with self.uow() as w:
            w.apps.get(app_name)
            return [w.alarms.record(row) for row in w.alarms.of_app(app_name)]

    def firing(self) -> list[AlarmRecord]:
        """Every alarm in ALARM, of every app."""
        with self.uow() as w:
            return [w.alarms.record(row) for row in w.alarms.firing()]

    def report_firing_before(self, alarm: AlarmRecord, release_id: str) -> bool:
        """Write the once-per-release report of an alarm that fired before ``release_id``
        was created; False when it was written already (by a notice or another process)."""
        with self.uow() as w:
            row = w.alarms.find(alarm.app, alarm.name)
            if row is None or row.reported_release == release_id or row.since != alarm.since:
                return False
            release = w.releases.get(release_id)
            row.reported_release = release_id
            w.event(
                w.apps.by_id(release.app_id),
                "controller",
                EventKind.ALARM,
                firing_before(alarm.name, alarm.since, release_id, alarm.reason),
                release=release,
                data={"alarm": alarm.name, "state": str(alarm.state), "since": alarm.since},
            )
            return True


class AlarmWatcher:
    """Re-checks the stored alarms every controller tick (see the module docstring)."""

    def __init__(self, alarms: AlarmService, releases: ReleaseService) -> None:
        self.alarms = alarms
        self.releases = releases

    def check(self) -> int:
        """Roll back what firing alarms call for; the number of rollbacks made."""
        firing = self.alarms.firing()
        if not firing:
            return 0
        releases = {r.app: r for r in self.releases.all_active()}
        made = 0
        for alarm in firing:
            release = releases.get(alarm.app)
            if release is None or release.phase not in ACTIVE_PHASES:
                continue
            if attributable(alarm.since, release.created_at):
                reason = rollback_reason(alarm.name, alarm.reason)
                if self.releases.rollback(release.id, alarm_actor(alarm.name), reason):
                    made += 1
                    releases.pop(alarm.app)
                continue
            if alarm.reported_release != release.id:
                self.alarms.report_firing_before(alarm, release.id)
        return made
