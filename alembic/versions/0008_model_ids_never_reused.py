"""model ids are never reused (SQLite AUTOINCREMENT)

Without AUTOINCREMENT SQLite gives a new row max(rowid) + 1, so a model made right after the
newest one was deleted took its id, and with it its event history. Found by the chaos harness.
PostgreSQL's sequences never reuse ids: nothing to do there.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # Batch mode copies the table into a new one made with these arguments (rows, ids,
    # constraints and indexes kept); sqlite_sequence then starts from the highest id there.
    with op.batch_alter_table("model", recreate="always",
                              table_kwargs={"sqlite_autoincrement": autoincrement}) as batch_op:
        batch_op.alter_column("id")


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
