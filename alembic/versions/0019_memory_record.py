"""A model's memory: the estimate it started with, and the most it used in that run

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model") as batch_op:
        batch_op.add_column(sa.Column("memory_estimate_mib", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("memory_used_mib", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model") as batch_op:
        batch_op.drop_column("memory_used_mib")
        batch_op.drop_column("memory_estimate_mib")
