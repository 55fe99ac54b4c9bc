"""predictions.views: how many mirror views `predict --flip-views` averaged into the mask (1: the crop alone), so
flip-averaged predictions are told apart from plain ones and a rerun with the other setting predicts again.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("views", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("views")
