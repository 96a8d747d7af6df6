"""The state schema (SQLAlchemy Core), identical on SQLite and PostgreSQL.

Times are stored as naive UTC; :mod:`drossel.storage.store` converts at the boundary.  Alembic
migrations in ``migrations/versions`` create and evolve exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False, default=""),
    Column("created_at", DateTime, nullable=False),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("email", String(320), nullable=False),
    UniqueConstraint("tenant_id", "email"),
)

connectors = Table(
    "connectors",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("type", String(20), nullable=False),
    Column("ip_ranges", Text, nullable=False, default=""),  # comma-separated CIDRs
    Column("tls_name", String(255), nullable=True),
    UniqueConstraint("tenant_id", "name"),
)

servers = Table(
    "servers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("fqdn", String(255), nullable=False),
    Column("product", String(40), nullable=False),
    Column("build", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("first_detected", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=False),
    Column("clock_start", DateTime, nullable=True),
    Column("clock_credit_seconds", Integer, nullable=False, default=0),
    Column("remediated_at", DateTime, nullable=True),
    Column("evidence", Text, nullable=False, default=""),
    # how the latest sighting was tied to its client (SPEC §3) and the client it came through
    Column("connector_type", String(20), nullable=False, default="Default"),
    Column("evidence_kind", String(12), nullable=False, default="connector"),
    Column("via", String(255), nullable=True),
    Column("trusted", Boolean, nullable=False, default=True),
    UniqueConstraint("tenant_id", "fqdn"),
    # the operator overview sorts and filters by these (migration 0004)
    Index("ix_servers_fqdn", "fqdn"),
    Index("ix_servers_first_detected", "first_detected"),
    Index("ix_servers_last_seen", "last_seen"),
    Index("ix_servers_kind", "build", "product", "connector_type", "evidence_kind"),
)

build_history = Table(
    "build_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("build", String(40), nullable=False),
    Column("first_seen", DateTime, nullable=False),
    Column("last_seen", DateTime, nullable=False),
    UniqueConstraint("server_id", "build"),
)

pauses = Table(
    "pauses",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("servers", Text, nullable=False, default=""),  # comma-separated FQDNs, "" = all
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("ended_early", Boolean, nullable=False, default=False),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
)

overrides = Table(
    "overrides",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True),
    Column("server", String(255), nullable=True),
    Column("reason", Text, nullable=False),
    Column("expires_at", DateTime, nullable=True),
    Column("created_by", String(200), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("removed_at", DateTime, nullable=True),
)

daily_counts = Table(
    "daily_counts",
    metadata,
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("action", String(10), primary_key=True),
    Column("count", Integer, nullable=False, default=0),
    # today's counters of every server, for the overview (migration 0004)
    Index("ix_daily_counts_day", "day", "server_id", "action", "count"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("tenant", String(200), nullable=True),
    Column("action", String(60), nullable=False),
    Column("detail", Text, nullable=False, default=""),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_key", String(400), nullable=False, unique=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
    Column("server", String(255), nullable=True),
    Column("event", String(40), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("sent_at", DateTime, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("body", Text, nullable=False, default=""),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(128), nullable=False, unique=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True),
    Column("role", String(20), nullable=False),  # "operator" or "tenant-admin"
    Column("label", String(200), nullable=False, default=""),
    Column("created_at", DateTime, nullable=False),
    Column("revoked_at", DateTime, nullable=True),
    Column("last_used_at", DateTime, nullable=True),
)

#: Web sessions, server-side: the cookie carries a random id whose SHA-256 is the key here, so
#: logout and token revocation end a session on every node, and a database reader cannot forge
#: one (the cookie is also signed with a key kept outside the database).
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("token_id", Integer, ForeignKey("tokens.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)
