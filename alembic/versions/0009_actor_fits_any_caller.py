"""model_event.actor fits any caller's name

An actor is "admin:<username>" or "token:<token name>", and both names may be 64 characters:
70 did not fit the 64 of the column, so on PostgreSQL every action of such a caller failed
with a 500 (SQLite does not enforce lengths). Now 128.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_event") as batch_op:
        batch_op.alter_column("actor", existing_type=sa.String(64), type_=sa.String(128), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("model_event") as batch_op:
        batch_op.alter_column("actor", existing_type=sa.String(128), type_=sa.String(64), existing_nullable=False)
