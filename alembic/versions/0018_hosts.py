"""Hosts: the Docker Engines models may run on; host 1 is the console's own DOCKER_HOST

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-28
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "host",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False, unique=True),
        sa.Column("endpoint", sa.String(length=512), nullable=True),
        sa.Column("address", sa.String(length=255), nullable=True),
        sa.Column("tls_ca", sa.Text(), nullable=True),
        sa.Column("tls_cert", sa.Text(), nullable=True),
        sa.Column("tls_key", sa.Text(), nullable=True),
        sa.Column("ssh_key", sa.Text(), nullable=True),
        sa.Column("ssh_host_key", sa.String(length=1024), nullable=True),
        sa.Column("reachable", sa.Boolean(), nullable=True),
        sa.Column("engine_version", sa.String(length=64), nullable=True),
        sa.Column("problem", sa.String(length=16), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("gpus", sa.JSON(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # The console's own engine is the first host: a single-host install has nothing to add.
    op.bulk_insert(table, [{"id": 1, "name": "local", "endpoint": None, "gpus": [],
                            "created_at": datetime.now(timezone.utc)}])
    if op.get_bind().dialect.name == "postgresql":  # the next id after the one given by hand
        op.execute("SELECT setval(pg_get_serial_sequence('host', 'id'), 1)")


def downgrade() -> None:
    op.drop_table("host")
