"""A model's alias: a public name replicas share behind the gateway

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model") as batch_op:
        batch_op.add_column(sa.Column("alias", sa.String(length=128), nullable=True))
        batch_op.create_index("ix_model_alias", ["alias"])


def downgrade() -> None:
    with op.batch_alter_table("model") as batch_op:
        batch_op.drop_index("ix_model_alias")
        batch_op.drop_column("alias")
