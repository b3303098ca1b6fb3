"""sign_in_throttle: attempts per account-and-address and per address, reserved atomically

Replaces admin_user.failed_attempts / locked_until: those were read before the password was
checked and written after, so 64 guesses at once ran 17 password checks; an attacker could
keep the only admin locked out from anywhere; and only existing accounts were throttled
(the 429 told which usernames exist). See throttle.py.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sign_in_throttle",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("admin_user") as batch_op:
        batch_op.drop_column("failed_attempts")
        batch_op.drop_column("locked_until")


def downgrade() -> None:
    with op.batch_alter_table("admin_user") as batch_op:
        batch_op.add_column(sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
    op.drop_table("sign_in_throttle")
