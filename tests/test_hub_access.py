"""Store access on both catalogues behind a real server: public, private and licensed entries; grants, purchases and
the owner's approval; scoped, expiring, revocable, hashed tokens; the pull log; bad and hostile requests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from test_hub_cli import run
from test_hub_support import (  # noqa: F401  (fixtures)
    ThreadServer,
    catalog_url_fixture,
    make_vector,
    postgres_server_fixture,
    server_fixture,
    store_fixture,
    store_state,
)

from steerlab.errors import SteerlabError
from steerlab.hub.client import RemoteStore
from steerlab.hub.errors import Conflict, Forbidden, NotFound, PaymentRequired, Unauthorized
from steerlab.hub.store import LocalStore, Publication

TERMS = "CC-BY-NC-4.0"
PRICE = "25.00 EUR"


def test_tokens_are_scoped_expiring_revocable_and_hashed(store: LocalStore) -> None:
    admin = store.create_token("alice", scope="admin")
    reader = store.create_token("alice", scope="read", principal="carol")
    writer = store.create_token("alice")  # write, as `steerlab hub token NS` always made
    with store.engine.connect() as conn:
        dump = " ".join(str(row) for row in conn.execute(text("SELECT * FROM hub_tokens")))
    assert all(t not in dump and t[4:] not in dump for t in (admin, reader, writer))
    data = make_vector(1).to_bytes()
    with pytest.raises(Forbidden, match="may only read"):
        store.publish(data, Publication("alice/v"), access=store.access(reader))
    store.publish(data, Publication("alice/v"), access=store.access(writer))
    with pytest.raises(Forbidden, match="admin token"):
        store.grant("alice/v", "bob", access=store.access(writer))
    assert store.grant("alice/v", "bob", access=store.access(admin))["principal"] == "bob"
    assert store.access(reader).principal == "carol" and store.access(reader).can_read("alice")
    assert not store.access(reader).can_read("other")

    expired = store.create_token("alice", expires=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(Unauthorized, match="expired"):
        store.access(expired)
    listed = {t["principal"]: t for t in store.tokens("alice")}
    assert listed["carol"]["scope"] == "read" and listed["alice"]["id"].startswith("tok_")
    store.revoke_token(listed["carol"]["id"])
    with pytest.raises(Forbidden, match="revoked"):
        store.access(reader)
    with pytest.raises(SteerlabError, match="invalid scope"):
        store.create_token("alice", scope="root")
    with pytest.raises(SteerlabError, match="needs a namespace"):
        store.create_token(None, scope="admin", principal="eve")


def _listed(remote: RemoteStore) -> list[str]:
    return [i.ref for i in remote.list()]


def test_public_private_and_licensed_entries_with_grants_orders_and_the_pull_log(
    server: ThreadServer, store: LocalStore
) -> None:
    alice = RemoteStore(server.url, token=store.create_token("alice", scope="admin"))
    bob = RemoteStore(server.url, token=store.create_token(None, principal="bob"))
    carol = RemoteStore(server.url, token=store.create_token(None, principal="carol"))
    dave = RemoteStore(server.url, token=store.create_token(None, principal="dave"))
    anonymous = RemoteStore(server.url)
    alice.publish(make_vector(1).to_bytes(), Publication("alice/open@1.0.0"))
    alice.publish(make_vector(2).to_bytes(), Publication("alice/secret@1.0.0", visibility="private"))
    pro = alice.publish(
        make_vector(3).to_bytes(), Publication("alice/pro@1.0.0", visibility="licensed", price=PRICE, terms=TERMS)
    )
    assert (pro.visibility, pro.price, pro.terms) == ("licensed", PRICE, TERMS)

    # Everyone sees the public and the licensed listing (with its terms and price), nobody else the private one.
    assert _listed(anonymous) == _listed(bob) == ["alice/open@1.0.0", "alice/pro@1.0.0"]
    assert anonymous.show("alice/pro").price == PRICE
    with pytest.raises(NotFound) as hidden:
        anonymous.show("alice/secret")
    with pytest.raises(NotFound) as missing:
        anonymous.show("alice/nothing")
    assert str(hidden.value).replace("secret", "X") == str(missing.value).replace("nothing", "X")  # no existence leak
    assert anonymous.get_bytes("alice/open")[1]
    with pytest.raises(PaymentRequired, match=rf"licensed \({TERMS}; {PRICE}\).*hub purchase alice/pro"):
        bob.get_bytes("alice/pro")

    # A purchase is an order that the owner approves; until then nothing changes.
    order = bob.purchase("alice/pro")
    assert (order["status"], order["price"], order["terms"], order["processor"]) == (
        "pending", PRICE, TERMS, "owner-approval",
    )  # fmt: skip
    with pytest.raises(PaymentRequired):
        bob.get_bytes("alice/pro")
    assert [o["id"] for o in bob.orders()] == [order["id"]] and dave.orders() == []
    with pytest.raises(Forbidden):
        bob.decide_order(order["id"], True)
    assert alice.decide_order(order["id"], True)["status"] == "approved"
    with pytest.raises(Conflict, match="already approved"):
        alice.decide_order(order["id"], True)
    assert bob.get_bytes("alice/pro")[1] == store.get_bytes("alice/pro")[1]
    with pytest.raises(Conflict, match="already holds"):
        bob.purchase("alice/pro")
    rejected = dave.purchase("alice/pro")
    assert alice.decide_order(rejected["id"], False)["status"] == "rejected"
    with pytest.raises(PaymentRequired):
        dave.get_bytes("alice/pro")
    with pytest.raises(SteerlabError, match="not licensed"):
        dave.purchase("alice/open")

    # A grant opens a private entry to one principal, until it is revoked.
    with pytest.raises(Forbidden):
        bob.grant("alice/secret", "carol")
    granted = alice.grant("alice/secret", "carol", expires="30d")
    assert granted["expires_at"] and _listed(carol) == ["alice/open@1.0.0", "alice/pro@1.0.0", "alice/secret@1.0.0"]
    assert carol.get_bytes("alice/secret")[0].visibility == "private"
    assert alice.revoke_grant("alice/secret", "carol") == 1
    with pytest.raises(NotFound):
        carol.get_bytes("alice/secret")

    # A listing changes for every version, by the namespace's admin only; the content and its signature stay.
    with pytest.raises(Forbidden):
        bob.set_listing("alice/open", "private")
    with pytest.raises(SteerlabError, match="price"):
        alice.set_listing("alice/open", "licensed", terms=TERMS)
    changed = alice.set_listing("alice/open", "licensed", "5.00 EUR", TERMS)
    assert [(i.version, i.visibility, i.price) for i in changed] == [("1.0.0", "licensed", "5.00 EUR")]
    with pytest.raises(PaymentRequired):
        dave.get_bytes("alice/open")
    alice.set_listing("alice/open", "public")
    assert dave.get_bytes("alice/open")[0].visibility == "public"

    # The pull log: who pulled which version under which right.
    log = [(p["principal"], p["entry"], p["basis"], p["entitlement"]) for p in alice.pulls("alice")]
    purchase = next(e for e in alice.entitlements("alice") if e["kind"] == "purchase")
    assert ("anonymous", "alice/open@1.0.0", "public", None) in log
    assert ("bob", "alice/pro@1.0.0", "entitlement", purchase["id"]) in log and purchase["order"] == order["id"]
    assert ("carol", "alice/secret@1.0.0", "entitlement", granted["id"]) in log
    assert ("dave", "alice/open@1.0.0", "public", None) in log
    assert not any(p[0] == "dave" and p[1] == "alice/pro@1.0.0" for p in log)  # refused pulls are not pulls
    for who, error in ((anonymous, Unauthorized), (bob, Forbidden)):
        with pytest.raises(error):
            who.pulls("alice")


def test_an_expired_grant_no_longer_opens_the_entry(store: LocalStore) -> None:
    store.publish(make_vector(1).to_bytes(), Publication("alice/secret@1.0.0", visibility="private"))
    carol = store.access(store.create_token(None, principal="carol"))
    store.ledger.grant("alice", "secret", "carol", store.access(store.create_token("alice", scope="admin")),
                       datetime.now(UTC) - timedelta(seconds=1))  # fmt: skip
    with pytest.raises(NotFound):
        store.get_bytes("alice/secret", access=carol)
    assert store.list(access=carol) == []


def test_bad_and_hostile_access_requests_are_refused_and_change_nothing(
    server: ThreadServer, store: LocalStore
) -> None:
    admin = store.create_token("alice", scope="admin")
    buyer = store.create_token(None, principal="bob")
    store.publish(make_vector(1).to_bytes(), Publication("alice/pro@1.0.0", visibility="licensed", price=PRICE,
                                                         terms=TERMS))  # fmt: skip
    api = server.url + "/api/v1"

    def auth(token: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"} if token else {}

    good = make_vector(2).to_bytes()
    cases = [
        ("bad visibility", "POST", "/entries/alice/v?visibility=secret", good, admin, 400, "invalid visibility"),
        ("licensed, no price", "POST", "/entries/alice/v?visibility=licensed&terms=MIT", good, admin, 400, "price"),
        ("licensed, bad price", "POST", "/entries/alice/v?visibility=licensed&terms=MIT&price=1e9", good, admin, 400,
         "price"),
        ("price on public", "POST", "/entries/alice/v?price=1.00%20EUR", good, admin, 400, "licensed listing"),
        ("grant without principal", "POST", "/grants", {"target": "alice/pro"}, admin, 400, "principal"),
        ("grant to a path", "POST", "/grants", {"target": "alice/pro", "principal": "../x"}, admin, 400, "invalid"),
        ("grant of a version", "POST", "/grants", {"target": "alice/pro@1.0.0", "principal": "bob"}, admin, 400,
         "every version"),
        ("grant, bad expiry", "POST", "/grants", {"target": "alice", "principal": "bob", "expires": "soon"}, admin, 400,
         "invalid expiry"),
        ("grant by a buyer", "POST", "/grants", {"target": "alice", "principal": "bob"}, buyer, 403, "admin token"),
        ("grant, not JSON", "POST", "/grants", b"not json", admin, 422, ""),
        ("anonymous purchase", "POST", "/orders", {"ref": "alice/pro"}, None, 401, "names you"),
        ("purchase of nothing", "POST", "/orders", {"ref": "alice/none"}, buyer, 404, "no entry"),
        ("purchase, bad ref", "POST", "/orders", {"ref": "../../etc"}, buyer, 400, "invalid"),
        ("unknown order", "POST", "/orders/999/approve", None, admin, 404, "no order 999"),
        ("odd decision", "POST", "/orders/1/delete", None, admin, 400, "unknown decision"),
        ("order id not a number", "POST", "/orders/one/approve", None, admin, 422, ""),
        ("pulls, anonymous", "GET", "/pulls?namespace=alice", None, None, 401, "admin token"),
        ("pulls, bad namespace", "GET", "/pulls?namespace=..", None, admin, 400, "invalid namespace"),
        ("forged token", "GET", "/orders", None, "stl_" + "A" * 43, 403, "not valid"),
        ("listing, no visibility", "POST", "/entries/alice/pro/listing", {}, admin, 400, "visibility"),
        ("listing, odd visibility", "POST", "/entries/alice/pro/listing", {"visibility": "all"}, admin, 400,
         "invalid visibility"),
        ("listing by a buyer", "POST", "/entries/alice/pro/listing", {"visibility": "public"}, buyer, 403, "admin"),
        ("listing of nothing", "POST", "/entries/alice/none/listing", {"visibility": "public"}, admin, 404, "no entry"),
    ]
    before = store_state(store), store.orders(), store.entitlements("alice")
    for label, method, path, body, token, status, message in cases:
        payload = {"content": body} if isinstance(body, bytes) else {"json": body} if body is not None else {}
        response = httpx.request(method, api + path, headers=auth(token), **payload)  # type: ignore[arg-type]
        assert response.status_code == status, (label, response.text)
        assert message in response.text, (label, response.text)
        assert (store_state(store), store.orders(), store.entitlements("alice")) == before, label


def test_cli_licensed_listing_purchase_approval_and_log(tmp_path: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("STEERLAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    root = str(tmp_path / "served")
    code, admin = run(["hub", "token", "alice", "--scope", "admin", "--root", root], capsys, monkeypatch)
    code2, buyer = run(["hub", "token", "--principal", "bob", "--expires", "30d", "--root", root], capsys, monkeypatch)
    assert code == code2 == 0
    admin, buyer = admin.strip(), buyer.strip()
    file = make_vector(4, name="pro").save(tmp_path / "pro.safetensors")
    with ThreadServer(LocalStore(root)) as server:
        push = ["hub", "push", str(file), "--to", server.url, "--name", "alice/pro", "--token", admin,
                "--visibility", "licensed", "--price", PRICE, "--terms", TERMS]  # fmt: skip
        code, out = run(push, capsys, monkeypatch)
        assert code == 0 and "published alice/pro@1.0.0" in out
        code, out = run(["hub", "list", "--from", server.url], capsys, monkeypatch)
        assert code == 0 and f"licensed {PRICE}" in out
        code, out = run(["hub", "show", "alice/pro", "--from", server.url], capsys, monkeypatch)
        assert code == 0 and f"licence terms: {TERMS}; price: {PRICE}" in out
        pull = ["hub", "pull", "alice/pro", "--from", server.url, "--out", str(tmp_path / "got.safetensors")]
        code, out = run([*pull, "--token", buyer], capsys, monkeypatch)
        assert code == 2 and "hub purchase alice/pro" in " ".join(out.split())
        code, out = run(["hub", "purchase", "alice/pro", "--from", server.url, "--token", buyer], capsys, monkeypatch)
        assert code == 0 and "order 1 for alice/pro" in out and "pending" in out
        orders = ["hub", "orders", "--namespace", "alice", "--from", server.url, "--token", admin, "--json"]
        code, out = run(orders, capsys, monkeypatch)
        assert code == 0 and '"status": "pending"' in out
        code, out = run(["hub", "approve", "1", "--from", server.url, "--token", admin], capsys, monkeypatch)
        assert code == 0 and "approved" in out
        code, out = run([*pull, "--token", buyer], capsys, monkeypatch)
        assert code == 0 and (tmp_path / "got.safetensors").read_bytes() == file.read_bytes()
        code, out = run(["hub", "pulls", "alice", "--from", server.url, "--token", admin], capsys, monkeypatch)
        assert code == 0 and "bob" in out and "entitlement" in out
    code, out = run(["hub", "tokens", "--root", root, "--json"], capsys, monkeypatch)
    bob = next(t for t in json.loads(out) if t["principal"] == "bob")
    assert code == 0 and bob["scope"] == "identity" and bob["expires_at"] and admin not in out
    code, out = run(["hub", "tokens", "--revoke", bob["id"], "--root", root], capsys, monkeypatch)
    assert code == 0 and f"revoked token {bob['id']}" in out
    code, out = run(["hub", "orders", "--from", root, "--token", buyer], capsys, monkeypatch)
    assert code == 2 and "revoked" in out
