"""lifecycle: load time, one host port per model, failure logs on events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.add_column(sa.Column("load_seconds", sa.Float(), nullable=True))
        batch_op.create_unique_constraint("uq_model_host_port", ["host_port"])
    with op.batch_alter_table("model_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("log_tail", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_event", schema=None) as batch_op:
        batch_op.drop_column("log_tail")
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.drop_constraint("uq_model_host_port", type_="unique")
        batch_op.drop_column("load_seconds")
