"""setup_code: the one-time code that creating the first admin needs

Without CORTEX_ADMIN_*, whoever reached the port first could claim the console (and with it
the Docker socket). Each start while no admin exists makes a new code, prints it, and keeps
only its SHA-256 here; creating the first admin consumes it.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "setup_code",
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("code_hash"),
    )


def downgrade() -> None:
    op.drop_table("setup_code")
