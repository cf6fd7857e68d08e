"""live A/B tests; the arm and shadowed prediction of each logged prediction

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ab_tests",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("challenger_version", sa.String(32), nullable=False),
        sa.Column("champion_version", sa.String(32)),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("challenger_share", sa.Float, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_by", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True)),
        sa.Column("stopped_by", sa.String(64)),
    )
    op.create_index("ix_ab_tests_started_at", "ab_tests", ["started_at"])
    # every prediction logged before was answered by the champion
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("arm", sa.String(16), nullable=False, server_default="champion"))
        batch.add_column(sa.Column("shadow_of", sa.String(36)))
        batch.create_index("ix_predictions_shadow_of", ["shadow_of"])


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_index("ix_predictions_shadow_of")
        batch.drop_column("shadow_of")
        batch.drop_column("arm")
    op.drop_table("ab_tests")
