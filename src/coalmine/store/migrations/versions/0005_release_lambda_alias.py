"""releases.lambda_alias: the Lambda alias a release keeps true

Copied from the app's ``release.lambda_alias`` when a release starts, like
its strategy and hooks; releases started before this revision keep none.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lambda_alias", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_column("lambda_alias")
