"""Usage summed per hour, model and key (what the Usage page reads), filled from the records

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_hour",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("key_name", sa.String(length=64), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),  # an hour of a busy model
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        sa.UniqueConstraint("hour", "model_name", "key_name", name="uq_usage_hour"),
    )
    # The records made before this revision, summed the way the meter sums new ones: the hour
    # in UTC, written as each backend stores the console's times (SQLite: the text SQLAlchemy
    # writes; PostgreSQL: a timestamptz, truncated in UTC whatever the session's zone).
    if op.get_bind().dialect.name == "postgresql":
        hour = "date_trunc('hour', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    else:
        hour = "substr(at, 1, 13) || ':00:00.000000'"
    op.execute(f"""
        INSERT INTO usage_hour (hour, model_name, key_name, requests, errors, prompt_tokens, completion_tokens,
                                latency_ms_sum)
        SELECT {hour}, model_name, key_name, count(*), sum(CASE WHEN status >= 400 THEN 1 ELSE 0 END),
               sum(prompt_tokens), sum(completion_tokens), sum(latency_ms)
        FROM usage_record GROUP BY {hour}, model_name, key_name""")


def downgrade() -> None:
    op.drop_table("usage_hour")
