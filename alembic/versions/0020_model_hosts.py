"""Models belong to a host: host_id (host 1 for every model so far), or `auto` placement at
Start; host ports are unique per host; each host has its own models and HF cache folders

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def _model_table():
    # SQLite rebuilds the table for these changes: keep its AUTOINCREMENT (ids never reused, 0008).
    return op.batch_alter_table("model", table_kwargs={"sqlite_autoincrement": True})


def upgrade() -> None:
    with op.batch_alter_table("host") as batch_op:
        batch_op.add_column(sa.Column("models_dir", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("hf_cache_dir", sa.String(length=512), nullable=True))
    with _model_table() as batch_op:
        batch_op.drop_constraint("uq_model_host_port", type_="unique")
        batch_op.add_column(sa.Column("host_id", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("auto_host", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_foreign_key("fk_model_host_id", "host", ["host_id"], ["id"])
        batch_op.create_index("ix_model_host_id", ["host_id"])
        # Two models never hold one port of one host, even when two Starts race.
        batch_op.create_unique_constraint("uq_model_host_port", ["host_id", "host_port"])


def downgrade() -> None:
    with _model_table() as batch_op:
        batch_op.drop_constraint("uq_model_host_port", type_="unique")
        batch_op.drop_index("ix_model_host_id")
        batch_op.drop_constraint("fk_model_host_id", type_="foreignkey")
        batch_op.drop_column("auto_host")
        batch_op.drop_column("host_id")
        batch_op.create_unique_constraint("uq_model_host_port", ["host_port"])
    with op.batch_alter_table("host") as batch_op:
        batch_op.drop_column("hf_cache_dir")
        batch_op.drop_column("models_dir")
