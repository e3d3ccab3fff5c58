"""The slider page against a real server with `--api-keys` (Debian's chromium through Playwright, a tiny model):
the page asks for a key, keeps it in sessionStorage, sends it as `Authorization: Bearer`, and explains 401 and 403."""

from __future__ import annotations

import json

import pytest
import torch
from test_serve_page import browser_tab, wait_done
from tiny import tiny_model

from steerlab import Card, Vector
from steerlab.serve.keys import add_key
from steerlab.serve.server import BackgroundServer, build_service

KEY_SLOT = "steerlab-api-key"  # the sessionStorage entry app.js keeps the key in


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    root = tmp_path_factory.mktemp("page-keys")
    gen = torch.Generator().manual_seed(0)
    for name in ("warm", "cold"):
        card = Card(name=name, recommended_scale=1.0)
        Vector({i: torch.randn(32, generator=gen) * 4 for i in range(4)}, card).save(
            root / "kits" / f"{name}.safetensors"
        )
    keys = root / "keys.json"
    secrets = {"alice": add_key(keys, "alice", ["warm"])[1], "bob": add_key(keys, "bob", ["cold"])[1]}
    audit = root / "audit.jsonl"
    service = build_service(
        tiny_model("llama"), kits_dir=root / "kits", audit_path=audit, model_id="tiny", api_keys=keys
    )
    with BackgroundServer(service) as server, browser_tab() as tab:
        yield server.url, secrets, audit, tab


def _enter_key(tab, key: str) -> None:
    tab.fill("#api-key", key)
    tab.click("#key-use")


def test_the_page_asks_for_a_key_and_uses_it(keyed) -> None:
    url, secrets, audit, tab = keyed
    tab.goto(url + "/")
    tab.wait_for_selector("body[data-auth='401']")
    assert "needs an API key (401)" in tab.inner_text("#auth-note")
    assert tab.locator("#kit option").count() == 0 and tab.is_visible("#key-form")

    _enter_key(tab, "slk_not-a-key")
    tab.wait_for_function("document.getElementById('auth-note').textContent.includes('refused this API key')")
    assert "invalid API key" in tab.inner_text("#auth-note")

    _enter_key(tab, secrets["alice"])
    tab.wait_for_selector("body[data-ready=true]")
    assert tab.inner_text("#auth-note") == ""
    assert tab.locator("#kit option").all_inner_texts() == ["warm (vector, 1 axis)"]  # only what alice may use
    assert tab.evaluate(f"sessionStorage.getItem('{KEY_SLOT}')") == secrets["alice"]
    assert tab.evaluate("localStorage.length") == 0  # never kept beyond the tab

    tab.fill("#max-tokens", "4")
    tab.click("#go")
    wait_done(tab, "unsteered", "steered")
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    chats = [r for r in records if r.get("endpoint") == "/v1/chat/completions" and r.get("status") == "ok"]
    assert len(chats) >= 2 and {r.get("principal") for r in chats} == {"alice"}


def test_a_key_that_may_not_steer_with_the_kit_gets_a_403_message(keyed) -> None:
    url, secrets, _audit, tab = keyed
    tab.goto(url + "/")
    tab.evaluate(f"sessionStorage.setItem('{KEY_SLOT}', {json.dumps(secrets['alice'])})")
    tab.goto(url + "/")
    tab.wait_for_selector("body[data-ready=true]")
    assert tab.input_value("#kit") == "warm"
    # The key changes under the loaded page (as from another tab): bob may not steer with warm.
    tab.evaluate(f"sessionStorage.setItem('{KEY_SLOT}', {json.dumps(secrets['bob'])})")
    tab.fill("#max-tokens", "4")
    tab.click("#go")
    wait_done(tab, "unsteered")
    tab.wait_for_selector("body[data-auth='403']")
    assert "may not do this (403)" in tab.inner_text("#auth-note")
    assert "key 'bob' may not steer with 'warm'" in tab.inner_text("#auth-note")
    assert tab.inner_text("#steered").startswith("error:")

    tab.click("#key-forget")  # the key goes, and the page asks again
    tab.wait_for_selector("body[data-auth='401']")
    assert tab.evaluate(f"sessionStorage.getItem('{KEY_SLOT}')") is None
