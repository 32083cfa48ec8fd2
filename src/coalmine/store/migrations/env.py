"""Alembic environment: runs on the connection `coalmine.store.db.migrate` hands it."""

from __future__ import annotations

from alembic import context

from coalmine.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only `migrate()` runs migrations
    raise RuntimeError("run migrations through coalmine.store.db.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
