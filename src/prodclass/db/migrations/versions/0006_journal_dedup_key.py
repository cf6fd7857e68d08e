"""journal entries that must be written once (alerts repeated by Alertmanager): a unique key

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("journal") as batch:  # SQLite alters a table by copying it
        batch.add_column(sa.Column("dedup_key", sa.String(255), nullable=True))
    # NULLs never collide: entries without a key (drift checks...) are not constrained
    op.create_index("ux_journal_dedup_key", "journal", ["dedup_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_journal_dedup_key", table_name="journal")
    with op.batch_alter_table("journal") as batch:
        batch.drop_column("dedup_key")
