"""The catalogue: namespaces, hashed tokens, entries (one row per published version), entitlements, orders and the
pull log, via SQLAlchemy.

SQLite by default (one file next to the blobs); any SQLAlchemy URL (e.g. postgresql+psycopg://...) for a shared
deployment. A row is committed only after its blob is on disk, so a visible row always has its content.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker
from sqlalchemy.schema import CreateIndex, CreateTable


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Namespace(Base):
    __tablename__ = "hub_namespaces"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    private: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Token(Base):
    """A bearer token: who holds it (principal), what it may do in one namespace (scope: read, write or admin; none
    for an identity-only token), until when. Only its sha256 is kept, so a leaked catalogue leaks no token."""

    __tablename__ = "hub_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str | None] = mapped_column(ForeignKey("hub_namespaces.name"), index=True, nullable=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    public_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)
    principal: Mapped[str | None] = mapped_column(String(64), nullable=True)
    scope: Mapped[str] = mapped_column(String(16), default="write", server_default="write")
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Entry(Base):
    """One immutable version of a vector or kit. Removed versions stay as tombstones so a version is never reused."""

    __tablename__ = "hub_entries"
    __table_args__ = (UniqueConstraint("namespace", "name", "version", name="uq_hub_entry_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(64))
    v_major: Mapped[int] = mapped_column(Integer)
    v_minor: Mapped[int] = mapped_column(Integer)
    v_patch: Mapped[int] = mapped_column(Integer)
    v_release: Mapped[int] = mapped_column(Integer)  # 1 for a release, 0 for a pre-release (which sorts first)
    v_pre: Mapped[str] = mapped_column(String(32), default="")
    kind: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    base_model: Mapped[str] = mapped_column(String(256), default="", index=True)
    fingerprint: Mapped[str] = mapped_column(String(128), default="")
    hidden_size: Mapped[int] = mapped_column(Integer, default=0)
    n_layers: Mapped[int] = mapped_column(Integer, default=0)
    max_layer: Mapped[int] = mapped_column(Integer, default=-1)
    license: Mapped[str] = mapped_column(String(128), default="")
    author: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[str] = mapped_column(String(64), default="")
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    card_json: Mapped[str] = mapped_column(Text)
    metrics_json: Mapped[str] = mapped_column(Text, default="{}")
    signature: Mapped[str | None] = mapped_column(Text, nullable=True)
    public_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    visibility: Mapped[str] = mapped_column(String(16), default="public", server_default="public")
    price: Mapped[str] = mapped_column(String(32), default="", server_default="")
    terms: Mapped[str] = mapped_column(Text, default="", server_default="")
    tags: Mapped[list[EntryTag]] = relationship(cascade="all, delete-orphan", lazy="selectin")


class EntryTag(Base):
    __tablename__ = "hub_entry_tags"

    entry_id: Mapped[int] = mapped_column(ForeignKey("hub_entries.id"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class Entitlement(Base):
    """A principal's right to pull a private or licensed entry (name "*": the whole namespace): granted by the owner,
    or made by an approved order."""

    __tablename__ = "hub_entitlements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(64), index=True)
    namespace: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # grant or purchase
    order_id: Mapped[int | None] = mapped_column(ForeignKey("hub_orders.id"), nullable=True)
    granted_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Order(Base):
    """A request to license an entry at its listed price and terms; what settles it is the payment processor's
    business (the default: the owner's approval)."""

    __tablename__ = "hub_orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal: Mapped[str] = mapped_column(String(64), index=True)
    namespace: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64))
    price: Mapped[str] = mapped_column(String(32))
    terms: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending, approved, rejected
    processor: Mapped[str] = mapped_column(String(64))
    processor_ref: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decided_by: Mapped[str] = mapped_column(String(64), default="")


class Pull(Base):
    """Who pulled which version, under what right (public, member, owner, or an entitlement)."""

    __tablename__ = "hub_pulls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    principal: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[str] = mapped_column(String(32), default="")
    namespace: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    basis: Mapped[str] = mapped_column(String(16))
    entitlement_id: Mapped[int | None] = mapped_column(ForeignKey("hub_entitlements.id"), nullable=True)


def make_engine(url: str) -> Engine:
    """An engine that tolerates many concurrent writers: WAL and a busy timeout on SQLite, pre-ping elsewhere."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    try:
        Base.metadata.create_all(engine)
    except (IntegrityError, ProgrammingError):
        # Another process created the tables between the existence check and CREATE (PostgreSQL); check again.
        Base.metadata.create_all(engine)
    _add_missing_columns(engine)
    _migrate_tokens(engine)
    return engine


def _add_missing_columns(engine: Engine) -> None:
    """A catalogue made by an older steerlab lacks the newer columns (all nullable or defaulted): add them."""
    tables = inspect(engine)
    for table in Base.metadata.sorted_tables:
        present = {column["name"] for column in tables.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            default = f" DEFAULT '{column.server_default.arg}'" if column.server_default is not None else ""  # type: ignore[attr-defined]
            with engine.begin() as conn:
                conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}{default}'))


def _migrate_tokens(engine: Engine) -> None:
    """Tokens from before scopes were write tokens for one namespace: they keep that (the scope column's default),
    held by their namespace, and get an id to be listed and revoked by. Their namespace column was NOT NULL, which
    would refuse identity-only tokens: it is relaxed (SQLite cannot alter a column, so the table is rebuilt).
    A catalogue with nothing to migrate is only read, so concurrent opens of a current one never write."""
    tables = inspect(engine)
    namespace = next(c for c in tables.get_columns("hub_tokens") if c["name"] == "namespace")
    unique: list[list[str | None]] = [list(u["column_names"]) for u in tables.get_unique_constraints("hub_tokens")]
    unique += [list(ix["column_names"]) for ix in tables.get_indexes("hub_tokens") if ix.get("unique")]
    if not namespace["nullable"] and engine.dialect.name == "sqlite":
        _rebuild_sqlite_tokens(engine)
        unique.append(["public_id"])  # the rebuilt table has the current constraints
    with engine.begin() as conn:
        if not namespace["nullable"] and engine.dialect.name != "sqlite":
            conn.execute(text("ALTER TABLE hub_tokens ALTER COLUMN namespace DROP NOT NULL"))
        query = text("SELECT id FROM hub_tokens WHERE public_id IS NULL OR principal IS NULL")
        for row_id in conn.execute(query).scalars().all():
            conn.execute(
                text(
                    "UPDATE hub_tokens SET principal = COALESCE(principal, namespace), "
                    "public_id = COALESCE(public_id, :p) WHERE id = :i"
                ),
                {"p": new_token_id(), "i": row_id},
            )
        if ["public_id"] not in unique:
            conn.execute(text("CREATE UNIQUE INDEX IF NOT EXISTS uq_hub_tokens_public_id ON hub_tokens (public_id)"))


def _rebuild_sqlite_tokens(engine: Engine) -> None:
    """Rebuild hub_tokens with the current schema in one transaction. Python's sqlite3 runs DDL outside any
    transaction it opens itself, so the statements go as one script between an explicit BEGIN and COMMIT: a crash
    or an error part-way leaves the old table and its tokens as they were."""
    table = Base.metadata.tables["hub_tokens"]
    columns = ", ".join(f'"{c.name}"' for c in table.columns)
    create = [str(CreateTable(table).compile(dialect=engine.dialect))]
    create += [str(CreateIndex(ix).compile(dialect=engine.dialect)) for ix in table.indexes]
    script = [
        "BEGIN IMMEDIATE",
        "ALTER TABLE hub_tokens RENAME TO hub_tokens_before_scopes",
        "DROP INDEX IF EXISTS ix_hub_tokens_namespace",  # it went with the old table; recreated below
        *create,
        f"INSERT INTO hub_tokens ({columns}) SELECT {columns} FROM hub_tokens_before_scopes",
        "DROP TABLE hub_tokens_before_scopes",
        "COMMIT",
    ]
    raw = engine.raw_connection()
    try:
        driver: Any = raw.driver_connection  # the sqlite3 connection: executescript is not on the DBAPI
        try:
            driver.executescript(";\n".join(script) + ";")
        except Exception:
            if driver.in_transaction:
                driver.rollback()
            raise
    finally:
        raw.close()


def new_token_id() -> str:
    """The public id a token is listed and revoked by (never its secret)."""
    return "tok_" + secrets.token_hex(6)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def make_sessions(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)
