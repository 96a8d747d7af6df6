"""indexes for the operator overview: sort columns of servers, today's counters

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

#: name -> (table, columns); the same as in drossel.storage.schema
INDEXES = {
    "ix_servers_fqdn": ("servers", ["fqdn"]),
    "ix_servers_first_detected": ("servers", ["first_detected"]),
    "ix_servers_last_seen": ("servers", ["last_seen"]),
    "ix_servers_kind": ("servers", ["build", "product", "connector_type", "evidence_kind"]),
    "ix_daily_counts_day": ("daily_counts", ["day", "server_id", "action", "count"]),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, (table, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
