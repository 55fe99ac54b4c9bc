"""judge_calls.key_id: a non-secret fingerprint of the API key a call was paid with (per-key budgets).

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("judge_calls") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
        batch.create_index("ix_judge_calls_key_id", ["key_id"])


def downgrade() -> None:
    with op.batch_alter_table("judge_calls") as batch:
        batch.drop_index("ix_judge_calls_key_id")
        batch.drop_column("key_id")
