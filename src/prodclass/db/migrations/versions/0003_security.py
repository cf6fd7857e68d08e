"""token revocation, encrypted user email

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revocations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("jti", sa.String(64), unique=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("not_before", sa.Float),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_revocations_expires_at", "revocations", ["expires_at"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_encrypted", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_encrypted")
    op.drop_table("revocations")
