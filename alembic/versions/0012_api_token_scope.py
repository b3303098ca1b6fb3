"""api_token: scope, expiry, revocation

A token could do everything an admin can over HTTP and never expired. Each token now has a
scope (read / operate / admin), an optional expiry and a revocation time (its row is kept, so
the Settings page shows when it was revoked). Tokens made before this revision become `read`:
what the Settings page offered them for (scripts and monitoring); an admin makes a new token
for more.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_token") as batch_op:
        batch_op.add_column(sa.Column("scope", sa.String(length=16), nullable=False, server_default="read"))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Before this revision every token could do everything: only admin tokens that never
    # expire and are not revoked stay; a read or operate token must not gain the admin's power.
    op.execute(sa.text("DELETE FROM api_token WHERE revoked_at IS NOT NULL OR expires_at IS NOT NULL"
                       " OR scope <> 'admin'"))
    with op.batch_alter_table("api_token") as batch_op:
        batch_op.drop_column("revoked_at")
        batch_op.drop_column("expires_at")
        batch_op.drop_column("scope")
