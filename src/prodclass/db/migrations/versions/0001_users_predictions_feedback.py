"""users, predictions and feedback

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_users_username", "users", ["username"], unique=True)
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("username", sa.String(64)),
        sa.Column("model_uri", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(32)),
        sa.Column("product_id", sa.String(64)),
        sa.Column("imageid", sa.String(64)),
        sa.Column("product_identifier", sa.String(128)),
        sa.Column("designation", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("text_sha256", sa.String(64)),
        sa.Column("image_sha256", sa.String(64)),
        sa.Column("inputs", sa.String(16), nullable=False),
        sa.Column("prdtypecode", sa.Integer, nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("top", sa.JSON, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
    )
    for column in ("created_at", "username", "model_version", "prdtypecode"):
        op.create_index(f"ix_predictions_{column}", "predictions", [column])
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("prediction_id", sa.String(36), sa.ForeignKey("predictions.id"), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("prdtypecode", sa.Integer, nullable=False),
        sa.Column("is_correction", sa.Boolean, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_feedback_prediction_id", "feedback", ["prediction_id"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("predictions")
    op.drop_table("users")
