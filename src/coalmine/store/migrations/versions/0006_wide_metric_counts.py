"""wide metric counts: metric_windows.requests and errors become 64-bit

They were ``INTEGER``: 32-bit on PostgreSQL, so a window of 2^31 requests
could not be written, and unchecked on SQLite, where a window summed past
2^63 made every later write of it fail. Ingestion now bounds every count of
a window, merged, to 2^53 - 1 (`coalmine.core.histogram.MAX_COUNT`); the
windows already beyond it (only an overflowing batch wrote them, and no
later batch could be added to them) are deleted, and the number is logged.

Revision ID: 0006
Revises: 0005
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

_MAX_COUNT = 2**53 - 1  # coalmine.core.histogram.MAX_COUNT when this revision was written


def upgrade() -> None:
    windows = sa.table(
        "metric_windows", sa.column("requests", sa.BigInteger), sa.column("errors", sa.BigInteger)
    )
    deleted = (
        op.get_bind()
        .execute(
            sa.delete(windows).where(
                sa.or_(windows.c.requests > _MAX_COUNT, windows.c.errors > _MAX_COUNT)
            )
        )
        .rowcount
    )
    if deleted:
        log.warning("0005: deleted %d metric windows whose counts overflowed", deleted)
    with op.batch_alter_table("metric_windows", schema=None) as batch_op:
        for column in ("requests", "errors"):
            batch_op.alter_column(
                column, existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False
            )


def downgrade() -> None:
    with op.batch_alter_table("metric_windows", schema=None) as batch_op:
        for column in ("requests", "errors"):
            batch_op.alter_column(
                column, existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False
            )
