"""The console's certificate authority for remote hosts' ingresses (cortex_app/ingress): its
certificate, and its key sealed like every other secret (secretbox.py); made at first need

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("installation") as batch_op:
        batch_op.add_column(sa.Column("ingress_ca_cert", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("ingress_ca_key", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("installation") as batch_op:
        batch_op.drop_column("ingress_ca_key")
        batch_op.drop_column("ingress_ca_cert")
