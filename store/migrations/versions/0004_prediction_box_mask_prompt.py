"""predictions.box and predictions.mask_prompt_id: the teacher's box and mask prompts of the correction tool, stored
with the prediction like its points so a human-prompted mask replays. Mask sources "prompted" and "mask_prompt" need
no DDL (mask_source is a plain VARCHAR, native_enum=False without a CHECK).

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("box", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("mask_prompt_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_predictions_mask_prompt_id_masks", "masks", ["mask_prompt_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.drop_constraint("fk_predictions_mask_prompt_id_masks", type_="foreignkey")
        batch.drop_column("mask_prompt_id")
        batch.drop_column("box")
