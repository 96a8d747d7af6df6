"""server evidence: connector type, evidence kind, via, trusted (SPEC §3)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("servers") as batch:
        batch.add_column(
            sa.Column("connector_type", sa.String(20), nullable=False, server_default="Default")
        )
        batch.add_column(
            sa.Column("evidence_kind", sa.String(12), nullable=False, server_default="connector")
        )
        batch.add_column(sa.Column("via", sa.String(255), nullable=True))
        batch.add_column(
            sa.Column("trusted", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("servers") as batch:
        for column in ("trusted", "via", "evidence_kind", "connector_type"):
            batch.drop_column(column)
