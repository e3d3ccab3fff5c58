"""`steerlab serve --protect`: a real server on loopback (tiny model) refuses steering whose combined effect cancels a
protected direction, however it is disguised, and lets benign and strengthening steering through."""

from __future__ import annotations

import json

import httpx
import pytest
import torch
from tiny import tiny_model

from steerlab import Card, Kit, KitEntry, Vector, kitfile
from steerlab.kit import KitCard
from steerlab.serve.registry import Limits
from steerlab.serve.server import BackgroundServer, build_service

BODY = {"model": "tiny", "prompt": "hello", "max_tokens": 2, "temperature": 0}


def _unit_vectors(seed: int) -> tuple[Vector, Vector]:
    """A direction to protect and a benign one orthogonal to it at every layer, both of norm 1."""
    gen = torch.Generator().manual_seed(seed)
    guarded, benign = {}, {}
    for layer in range(4):
        p, b = torch.randn(32, generator=gen), torch.randn(32, generator=gen)
        p = p / p.norm()
        b = b - (b @ p) * p
        guarded[layer], benign[layer] = p, b / b.norm()
    return Vector(guarded, Card(name="guarded")), Vector(benign, Card(name="benign"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    kits = root / "kits"
    guarded, benign = _unit_vectors(0)
    protected = guarded.save(root / "guarded.safetensors")
    guarded.save(kits / "guarded.safetensors")
    benign.save(kits / "benign.safetensors")
    cheerful = Vector({la: -d for la, d in guarded.directions.items()}, Card(name="cheerful"))  # -guarded, renamed
    cheerful.save(kits / "cheerful.safetensors")
    kit = Kit([KitEntry(benign, 1.0), KitEntry(cheerful, 1.0)], KitCard(name="mood"))
    kitfile.save_kit(kit, kits / "mood.json", vector_files=[kits / "benign.safetensors", kits / "cheerful.safetensors"])
    audit = root / "audit.jsonl"
    service = build_service(
        tiny_model("llama"),
        kits_dir=kits,
        audit_path=audit,
        model_id="tiny",
        protect=[str(protected)],
        limits=Limits(max_scale=1e6),
    )
    assert service.guard is not None and service.guard.names == ["guarded"]
    (direction,) = service.guard.protected
    per_scale = sum(direction.magnitudes[la] / direction.norms[la] for la in direction.units)
    with BackgroundServer(service) as srv:
        yield srv.url, audit, per_scale, kits


def _post(url: str, steering) -> httpx.Response:
    return httpx.post(f"{url}/v1/completions", json={**BODY, "steering": steering}, timeout=60)


def test_disguised_negations_are_refused(server) -> None:
    url, audit, per_scale, kits = server
    at = lambda dose: dose / per_scale  # noqa: E731  (the scale of a relative dose over all 4 layers)
    # mood.json steers cheerful at scale 1.0: rewrite its scale to dose 0.5
    document = json.loads((kits / "mood.json").read_text())
    document["entries"][1]["scale"] = at(0.5)
    (kits / "mood.json").write_text(json.dumps(document))
    attempts = {
        "renamed": [{"vector": "cheerful", "scale": at(0.5)}],
        "mixed with a benign vector": [
            {"vector": "benign", "scale": at(3.0)},
            {"vector": "cheerful", "scale": at(0.5)},
        ],
        "split in two entries": [{"vector": "guarded", "scale": -at(0.15)}, {"vector": "cheerful", "scale": at(0.15)}],
        "negated directly": [{"vector": "guarded", "scale": -at(0.5)}],
        "a kit file": "mood",
    }
    for what, steering in attempts.items():
        response = _post(url, steering)
        assert response.status_code == 400, what
        error = response.json()["error"]
        assert error["code"] == "protected_direction" and error["param"] == "steering", what
        assert "'guarded'" in error["message"] and "layer" in error["message"], what
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["error"] for r in records[-len(attempts) :]] == ["protected_direction"] * len(attempts)


def test_benign_and_strengthening_steering_pass(server) -> None:
    url, _audit, per_scale, _kits = server
    at = lambda dose: dose / per_scale  # noqa: E731
    for steering in (
        [{"vector": "benign", "scale": at(5.0)}],
        [{"vector": "guarded", "scale": at(5.0)}],
        [{"vector": "cheerful", "scale": at(0.15)}],  # under the threshold (0.2)
        [{"vector": "guarded", "scale": -at(0.15)}, {"vector": "guarded", "scale": at(0.15)}],  # they cancel out
        None,
    ):
        response = _post(url, steering)
        assert response.status_code == 200, (steering, response.text)


def test_a_default_kit_that_cancels_a_protected_direction_stops_the_start(tmp_path) -> None:
    from steerlab.guard.screen import ProtectedDirectionError

    guarded, _benign = _unit_vectors(1)
    kits = tmp_path / "kits"
    protected = guarded.save(tmp_path / "guarded.safetensors")
    Vector({la: -5 * d for la, d in guarded.directions.items()}, Card(name="sunny")).save(kits / "sunny.safetensors")
    with pytest.raises(ProtectedDirectionError, match="'guarded'"):
        build_service(tiny_model("llama"), kits_dir=kits, default="sunny", protect=[str(protected)])


def test_given_reference_norms_replace_the_measured_ones(tmp_path) -> None:
    """`--protect-norms` (and the vLLM engine, whose model runs no forward here): doses are taken against the norms
    given, so doubling them halves what a request's scale counts for."""
    from steerlab.guard.norms import write_norms
    from steerlab.serve.server import build_guard

    guarded, _benign = _unit_vectors(2)
    protected = str(guarded.save(tmp_path / "guarded.safetensors"))
    model = tiny_model("llama")
    measured = build_guard(model, [protected], 0.2).protected[0].norms
    doubled = {la: 2 * h for la, h in measured.items()}
    service = build_service(model, protect=[protected], protect_norms=doubled)
    assert service.guard is not None and service.guard.protected[0].norms == doubled
    # The CLI's path: a norms file written by `steerlab serve norms`, read back by --protect-norms.
    from steerlab.guard.norms import read_norms

    path = write_norms(tmp_path / "norms.json", "tiny", model.fingerprint, doubled)
    assert read_norms(path) == pytest.approx(doubled, rel=1e-5)
    # vLLM's model is a weightless skeleton: the norms shipped for it; none are shipped for the tiny one, and the
    # error says what to do.
    from steerlab.errors import SteerlabError
    from steerlab.vllm.target import build_target

    skeleton = build_target(model.hf_model.config, "tiny", torch.device("cpu"), torch.float32)
    with pytest.raises(SteerlabError, match="--protect-norms FILE"):
        build_guard(skeleton, [protected], 0.2)
