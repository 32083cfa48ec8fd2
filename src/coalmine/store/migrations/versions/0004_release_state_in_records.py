"""release state in records: releases.started_at, analysis_runs.applied, alarms.reported_release

Before this revision the controller searched the audit log for these: the
``started`` event for the judge's window, a ``paused`` event after a run for
whether its pause was done, ``alarm`` events for whether a firing-before
alarm was reported. The upgrade fills the new columns from those events once.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ACTIVE = ("pending", "running", "paused", "promoting", "rolling_back")


def upgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("started_at", sa.Float(), nullable=True))
    with op.batch_alter_table("analysis_runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("applied", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reported_release", sa.String(length=80), nullable=True))
    _backfill(op.get_bind())


def _backfill(conn: sa.Connection) -> None:
    events = sa.table(
        "events",
        sa.column("id", sa.Integer),
        sa.column("release_id", sa.String),
        sa.column("at", sa.Float),
        sa.column("kind", sa.String),
        sa.column("data", sa.JSON),
    )
    releases = sa.table(
        "releases",
        sa.column("id", sa.String),
        sa.column("phase", sa.String),
        sa.column("started_at", sa.Float),
    )
    runs = sa.table(
        "analysis_runs",
        sa.column("id", sa.Integer),
        sa.column("release_id", sa.String),
        sa.column("action", sa.String),
        sa.column("results", sa.JSON),
        sa.column("applied", sa.Boolean),
    )
    alarms = sa.table(
        "alarms",
        sa.column("id", sa.Integer),
        sa.column("app", sa.String),
        sa.column("name", sa.String),
        sa.column("state", sa.String),
        sa.column("since", sa.Float),
        sa.column("reported_release", sa.String),
    )
    started = conn.execute(
        sa.select(events.c.release_id, sa.func.min(events.c.at))
        .where(events.c.kind == "started", events.c.release_id.is_not(None))
        .group_by(events.c.release_id)
    ).all()
    for release_id, at in started:
        conn.execute(releases.update().where(releases.c.id == release_id).values(started_at=at))

    # The latest run of an active release whose rollback or pause may not have happened.
    active = set(conn.scalars(sa.select(releases.c.id).where(releases.c.phase.in_(_ACTIVE))))
    latest: dict[str, tuple[int, str, object]] = {}
    for run_id, release_id, action, results in conn.execute(
        sa.select(runs.c.id, runs.c.release_id, runs.c.action, runs.c.results).order_by(runs.c.id)
    ):
        latest[release_id] = (run_id, action, results)
    for release_id, (run_id, action, results) in latest.items():
        if release_id not in active or action not in ("rollback", "pause"):
            continue
        after = results.get("event_id") if isinstance(results, dict) else None
        paused = (
            action == "pause"
            and isinstance(after, int)
            and conn.scalar(
                sa.select(sa.func.count())
                .select_from(events)
                .where(
                    events.c.release_id == release_id,
                    events.c.id > after,
                    events.c.kind == "paused",
                )
            )
        )
        if not paused:
            conn.execute(runs.update().where(runs.c.id == run_id).values(applied=False))

    firing = conn.execute(
        sa.select(alarms.c.id, alarms.c.name, alarms.c.since).where(alarms.c.state == "ALARM")
    ).all()
    for alarm_id, name, since in firing:
        for release_id, data in conn.execute(
            sa.select(events.c.release_id, events.c.data)
            .where(events.c.kind == "alarm", events.c.release_id.is_not(None))
            .order_by(events.c.id.desc())
        ):
            if isinstance(data, dict) and data.get("alarm") == name and data.get("since") == since:
                conn.execute(
                    alarms.update()
                    .where(alarms.c.id == alarm_id)
                    .values(reported_release=release_id)
                )
                break


def downgrade() -> None:
    with op.batch_alter_table("alarms", schema=None) as batch_op:
        batch_op.drop_column("reported_release")
    with op.batch_alter_table("analysis_runs", schema=None) as batch_op:
        batch_op.drop_column("applied")
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_column("started_at")
