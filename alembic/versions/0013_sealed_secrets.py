"""webhook secrets and HF tokens sealed at rest

Webhook signing secrets and HF tokens sat in the database in clear. They are now sealed with
the console's secret key (cortex_app/secretbox.py: CORTEX_SECRET_KEY, or the data dir's
secret.key, made 0600 before this migration runs); the columns grow to hold the sealed form.
Downgrade unseals them again (it needs the same key).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from cortex_app import secretbox

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

COLUMNS = (("webhook_endpoint", "secret", 128, False), ("model", "hf_token", 512, True))


def _rewrite(conn: sa.Connection, table: str, column: str, change) -> None:
    rows = conn.execute(sa.text(f"SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL")).all()
    for row_id, value in rows:
        conn.execute(sa.text(f"UPDATE {table} SET {column} = :v WHERE id = :i"), {"v": change(value), "i": row_id})


def _batch(table: str):
    # SQLite rebuilds the table: the model table keeps AUTOINCREMENT (0008: ids never reused).
    return op.batch_alter_table(table, table_kwargs={"sqlite_autoincrement": True} if table == "model" else {})


def upgrade() -> None:
    conn = op.get_bind()
    for table, column, old_length, nullable in COLUMNS:
        with _batch(table) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(old_length), type_=sa.String(1024),
                                  existing_nullable=nullable)
        _rewrite(conn, table, column, lambda v: v if v.startswith(secretbox.PREFIX) else secretbox.seal(v))


def downgrade() -> None:
    conn = op.get_bind()
    for table, column, old_length, nullable in COLUMNS:
        def clear(value: str, what=f"{table}.{column}") -> str:
            out = secretbox.unseal(value, what)
            if out is None:
                raise secretbox.SecretKeyError(f"cannot unseal {what}: run the downgrade with the key it was "
                                               "sealed with (CORTEX_SECRET_KEY or the data dir's secret.key)")
            return out

        _rewrite(conn, table, column, clear)
        with _batch(table) as batch_op:
            batch_op.alter_column(column, existing_type=sa.String(1024), type_=sa.String(old_length),
                                  existing_nullable=nullable)
