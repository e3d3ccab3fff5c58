"""A catalogue written before scoped tokens existed (its tokens: one namespace, no scope, principal or id; its
namespace column NOT NULL) opens and migrates, on SQLite and on the real PostgreSQL: the old tokens keep the write
access they had on their namespace, get an id to be listed and revoked by, and identity-only tokens can be issued."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import httpx
import pytest
from test_hub_support import (  # noqa: F401  (fixtures)
    ThreadServer,
    catalog_url_fixture,
    make_vector,
    postgres_server_fixture,
)

from steerlab.hub.errors import Forbidden
from steerlab.hub.store import LocalStore, Publication

OLD_SECRET = "stl_an-old-write-token-from-before-scopes"

# The tables as steerlab wrote them before scoped tokens, market and pull log (git ebda9df, hub/catalog.py).
OLD_TABLES = """
CREATE TABLE hub_namespaces (
    name VARCHAR(64) NOT NULL PRIMARY KEY, private BOOLEAN NOT NULL, created_at {time} NOT NULL);
CREATE TABLE hub_tokens (
    id {serial} PRIMARY KEY, namespace VARCHAR(64) NOT NULL REFERENCES hub_namespaces (name),
    token_hash VARCHAR(64) NOT NULL UNIQUE, created_at {time} NOT NULL);
CREATE INDEX ix_hub_tokens_namespace ON hub_tokens (namespace);
CREATE TABLE hub_entries (
    id {serial} PRIMARY KEY, namespace VARCHAR(64) NOT NULL, name VARCHAR(64) NOT NULL,
    version VARCHAR(64) NOT NULL, v_major INTEGER NOT NULL, v_minor INTEGER NOT NULL, v_patch INTEGER NOT NULL,
    v_release INTEGER NOT NULL, v_pre VARCHAR(32) NOT NULL, kind VARCHAR(16) NOT NULL, sha256 VARCHAR(64) NOT NULL,
    size INTEGER NOT NULL, description TEXT NOT NULL, base_model VARCHAR(256) NOT NULL,
    fingerprint VARCHAR(128) NOT NULL, hidden_size INTEGER NOT NULL, n_layers INTEGER NOT NULL,
    max_layer INTEGER NOT NULL, license VARCHAR(128) NOT NULL, author VARCHAR(256) NOT NULL,
    created_at VARCHAR(64) NOT NULL, published_at {time} NOT NULL, card_json TEXT NOT NULL,
    metrics_json TEXT NOT NULL, signature TEXT, public_key TEXT, key_id VARCHAR(64), removed_at {time},
    CONSTRAINT uq_hub_entry_version UNIQUE (namespace, name, version));
CREATE TABLE hub_entry_tags (
    entry_id INTEGER NOT NULL REFERENCES hub_entries (id), tag VARCHAR(64) NOT NULL, PRIMARY KEY (entry_id, tag));
INSERT INTO hub_namespaces (name, private, created_at) VALUES ('team', {false}, '2026-01-05 10:00:00');
INSERT INTO hub_tokens (namespace, token_hash, created_at) VALUES ('team', '{hash}', '2026-01-05 10:00:00');
"""


def _old_catalogue(root: Path, catalog_url: str | None) -> None:
    digest = hashlib.sha256(OLD_SECRET.encode()).hexdigest()
    if catalog_url is None:
        root.mkdir(parents=True)
        with sqlite3.connect(root / "catalog.sqlite") as conn:
            conn.executescript(OLD_TABLES.format(time="DATETIME", serial="INTEGER", false="0", hash=digest))
        return
    import psycopg

    sql = OLD_TABLES.format(time="TIMESTAMP WITH TIME ZONE", serial="SERIAL", false="false", hash=digest)
    with psycopg.connect(catalog_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for statement in filter(str.strip, sql.split(";")):
            conn.execute(statement)


def test_an_old_catalogue_migrates_and_its_tokens_keep_their_write_access(
    tmp_path: Path, catalog_url: str | None
) -> None:
    root = tmp_path / "store"
    _old_catalogue(root, catalog_url)
    store = LocalStore(root, catalog_url=catalog_url)
    (old,) = store.tokens()
    assert (old["namespace"], old["scope"], old["principal"]) == ("team", "write", "team")
    assert old["id"].startswith("tok_") and old["created_at"].startswith("2026-01-05")

    access = store.access(OLD_SECRET)
    assert access.can_write("team") and not access.can_admin("team") and access.token_id == old["id"]
    with ThreadServer(store) as server:  # the old token publishes over HTTP as it always did
        answer = httpx.post(
            f"{server.url}/api/v1/entries/team/calm?version=1.0.0",
            content=make_vector(1, name="calm").to_bytes(),
            headers={"authorization": f"Bearer {OLD_SECRET}"},
            timeout=60,
        )
        assert answer.status_code == 201, answer.text
    buyer = store.create_token(None, principal="buyer")  # identity-only: the old NOT NULL would refuse it
    assert store.access(buyer).principal == "buyer" and store.access(buyer).namespace is None

    store.close()
    again = LocalStore(root, catalog_url=catalog_url)  # a second open finds nothing left to migrate
    assert [t["id"] for t in again.tokens()] == [old["id"], store.access(buyer).token_id]
    again.revoke_token(old["id"])
    with pytest.raises(Forbidden, match="revoked"):
        again.access(OLD_SECRET)
    assert [info.ref for info in again.list()] == ["team/calm@1.0.0"]
    again.close()


def test_publishing_through_the_migrated_store_keeps_tokens_scoped(tmp_path: Path, catalog_url: str | None) -> None:
    root = tmp_path / "store"
    _old_catalogue(root, catalog_url)
    store = LocalStore(root, catalog_url=catalog_url)
    with pytest.raises(Forbidden, match="for namespace 'team', not 'other'"):
        store.publish(make_vector(2).to_bytes(), Publication("other/x@1.0.0"), store.access(OLD_SECRET))
    store.close()


def test_a_migration_that_fails_part_way_leaves_the_old_tokens_as_they_were(tmp_path: Path) -> None:
    """SQLite rebuilds the tokens table. An error after the rename and the new table's creation (here: two old rows
    that break the new table's unique public_id) rolls the whole rebuild back: the old table and its tokens survive,
    and once the cause is fixed a later open migrates."""
    root = tmp_path / "store"
    _old_catalogue(root, None)
    path = root / "catalog.sqlite"
    digest = hashlib.sha256(OLD_SECRET.encode()).hexdigest()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE hub_tokens ADD COLUMN public_id VARCHAR(32)")
        conn.execute("INSERT INTO hub_tokens (namespace, token_hash, created_at) VALUES ('team', 'x', '2026-01-06')")
        conn.execute("UPDATE hub_tokens SET public_id = 'tok_same'")
    with pytest.raises(Exception, match=r"UNIQUE constraint failed: hub_tokens\.public_id"):
        LocalStore(root)
    with sqlite3.connect(path) as conn:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = conn.execute("SELECT namespace, token_hash FROM hub_tokens ORDER BY id").fetchall()
        conn.execute("UPDATE hub_tokens SET public_id = NULL WHERE token_hash = 'x'")
    assert "hub_tokens_before_scopes" not in tables
    assert rows == [("team", digest), ("team", "x")]
    store = LocalStore(root)
    assert store.access(OLD_SECRET).can_write("team")
    store.close()
