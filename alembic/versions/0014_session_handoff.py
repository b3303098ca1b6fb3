"""admin_session.handoff_hash: a page's sign-in handed over by a one-time code; sessions reset

The session cookie is HttpOnly now, set by the server. A sign-in on the page makes a session
waiting to be handed over (the SHA-256 of a one-time code, for a minute) and the page posts
the code to /api/session/adopt, which gives the session its token as the cookie. Sessions made
before this revision live in cookies that any script of the page could read: they end here,
and everyone signs in once more.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM admin_session"))
    with op.batch_alter_table("admin_session") as batch_op:
        batch_op.add_column(sa.Column("handoff_hash", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint("uq_admin_session_handoff_hash", ["handoff_hash"])


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM admin_session WHERE handoff_hash IS NOT NULL"))
    with op.batch_alter_table("admin_session") as batch_op:
        batch_op.drop_constraint("uq_admin_session_handoff_hash", type_="unique")
        batch_op.drop_column("handoff_hash")
