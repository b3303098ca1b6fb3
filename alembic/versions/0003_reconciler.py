"""reconciler: health columns, restart policies, state timestamps, event kinds, leader lease

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("health", sa.Enum("unknown", "healthy", "unhealthy", name="health",
                                                        native_enum=False, length=16),
                                      nullable=False, server_default="unknown"))
        batch_op.add_column(sa.Column("last_probe_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("probe_latency_ms", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("probe_history", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("start_on_boot", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("restart_on_failure", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("restart_max_attempts", sa.Integer(), nullable=False, server_default="3"))
        batch_op.add_column(sa.Column("restart_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("next_restart_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("model_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", sa.Enum("state", "health", "container", name="eventkind",
                                                      native_enum=False, length=16),
                                      nullable=False, server_default="state"))
    op.create_table(
        "leader_lease",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leader_lease")
    with op.batch_alter_table("model_event", schema=None) as batch_op:
        batch_op.drop_column("kind")
    with op.batch_alter_table("model", schema=None) as batch_op:
        for column in ("next_restart_at", "restart_attempts", "restart_max_attempts", "restart_on_failure",
                       "start_on_boot", "probe_history", "consecutive_failures", "probe_latency_ms",
                       "last_probe_at", "health", "state_changed_at"):
            batch_op.drop_column(column)
