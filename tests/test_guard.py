"""The protected-direction guard on its own: doses, disguises, ablation, loading (no model; the starter pack's
refusal vector for the real case)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steerlab import Card, Kit, KitEntry, SteerlabError, Vector, resolve
from steerlab.guard.norms import read_norms, shipped_norms, shipped_path
from steerlab.guard.protected import load_protected, protect_vector
from steerlab.guard.screen import DEFAULT_THRESHOLD, Guard, ProtectedDirectionError, cancellation

H, LAYERS = 32, [0, 1, 2, 3]
NORMS = dict.fromkeys(LAYERS, 10.0)


def _vector(name: str, seed: int, norm: float = 2.0) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    directions = {}
    for layer in LAYERS:
        d = torch.randn(H, generator=gen)
        directions[layer] = d / d.norm() * norm
    return Vector(directions, Card(name=name))


@pytest.fixture
def refusal() -> Vector:
    return _vector("refusal", 0)


@pytest.fixture
def guard(refusal: Vector) -> Guard:
    return Guard([protect_vector(refusal, "refusal", NORMS)], threshold=0.2)


def _orthogonal(refusal: Vector, seed: int) -> Vector:
    """A benign vector with no component along refusal at any layer."""
    other = _vector("benign", seed)
    return other.orthogonalized(refusal)


def test_dose_is_the_relative_dose_of_the_negation(refusal: Vector, guard: Guard) -> None:
    """-s * refusal on one layer cancels by s |p| / h there; a kit of it at scale 0.5 on 2 layers: 2 * 0.5*2/10."""
    doses = cancellation(Kit([KitEntry(refusal, -0.5, [1, 2])]), guard.protected[0])
    assert doses == pytest.approx({1: 0.1, 2: 0.1})
    assert guard.screen(Kit([KitEntry(refusal, -0.5, [1])])) is None  # 0.1: under the threshold
    breach = guard.screen(Kit([KitEntry(refusal, -0.5, [1, 2, 3])]))
    assert breach is not None and breach.dose == pytest.approx(0.3) and breach.direction == "refusal"


def test_disguises_are_caught(refusal: Vector, guard: Guard) -> None:
    """Another name, a benign vector mixed in, the negation split in entries or spread thinly over layers."""
    renamed = Vector({la: -d for la, d in refusal.directions.items()}, Card(name="cheerful-helper"))
    benign = _orthogonal(refusal, 5)
    kits = {
        "renamed": Kit([KitEntry(renamed, 1.0)]),
        "mixed": Kit([KitEntry(benign, 3.0), KitEntry(renamed, 0.6, [2, 3])]),
        "split": Kit([KitEntry(refusal, -0.4, [2]), KitEntry(refusal, -0.4, [2]), KitEntry(refusal, -0.4, [2])]),
        "spread": Kit([KitEntry(refusal, -0.35)]),  # 0.07 per layer, 0.28 in all
    }
    for what, kit in kits.items():
        with pytest.raises(ProtectedDirectionError) as caught:
            guard.check(kit)
            pytest.fail(f"{what} passed")
        assert "'refusal'" in str(caught.value) and "layer" in str(caught.value), what
    alone = Kit([KitEntry(refusal, -0.4, [2])])
    assert guard.screen(alone) is None  # each part of the split passes on its own


def test_benign_and_strengthening_pass(refusal: Vector, guard: Guard) -> None:
    benign = _orthogonal(refusal, 7)
    assert guard.screen(Kit([KitEntry(benign, 8.0)])) is None
    assert guard.screen(Kit([KitEntry(refusal, 8.0), KitEntry(benign, -8.0)])) is None
    assert guard.screen(None) is None


def test_strengthening_one_layer_does_not_pay_for_cancelling_another(refusal: Vector, guard: Guard) -> None:
    kit = Kit([KitEntry(refusal, 5.0, [0]), KitEntry(refusal, -1.5, [3])])
    breach = guard.screen(kit)
    assert breach is not None and breach.layer == 3 and breach.dose == pytest.approx(0.3)


def test_ablation_of_the_protected_direction(refusal: Vector, guard: Guard) -> None:
    """Ablating p at coefficient c counts as subtracting c p; ablating an orthogonal direction counts nothing."""
    doses = cancellation(Kit([KitEntry(refusal, 1.0, [1], mode="ablate")]), guard.protected[0])
    assert doses == pytest.approx({1: 0.2})
    assert guard.screen(Kit([KitEntry(refusal, 1.0, [1, 2], mode="ablate")])) is not None
    assert guard.screen(Kit([KitEntry(_orthogonal(refusal, 9), 1.0, mode="ablate")])) is None


def test_vectors_of_another_width_are_not_compared(guard: Guard) -> None:
    wide = Vector({1: torch.ones(64)}, Card(name="wide"))
    assert guard.screen(Kit([KitEntry(wide, -100.0)])) is None


def test_bad_thresholds_and_directions_are_refused(refusal: Vector) -> None:
    with pytest.raises(SteerlabError, match="positive relative dose"):
        Guard([], threshold=0.0)
    with pytest.raises(SteerlabError, match="no reference norm for layers"):
        protect_vector(refusal, "refusal", {0: 1.0})
    zero = Vector({0: torch.zeros(H)}, Card(name="zero"))
    with pytest.raises(SteerlabError, match="zero or not finite"):
        protect_vector(zero, "zero", NORMS)


def test_load_protected_from_a_file(tmp_path: Path, refusal: Vector) -> None:
    path = refusal.save(tmp_path / "refusal.safetensors")
    protected = load_protected(f"{path}@2-3", NORMS)
    assert sorted(protected.units) == [2, 3] and protected.name.startswith("refusal")
    flipped = load_protected(f"{path}:-1", NORMS)
    assert torch.allclose(flipped.units[0], -(refusal.directions[0] / 2.0))
    with pytest.raises(SteerlabError, match="no reference residual norms are shipped"):
        load_protected(str(path))  # a card with no known model: the norms must be given


def test_norm_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"norms": {"0": -1}}))
    with pytest.raises(SteerlabError, match="positive"):
        read_norms(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(SteerlabError, match="not a reference-norms file"):
        read_norms(bad)


def test_the_starter_refusal_vector_with_the_shipped_norms() -> None:
    """The real case, model-free as in the store: -refusal at dose 0.5 is refused, happy at dose 0.7 passes."""
    refusal = resolve("starter/refusal").entries[0].vector
    happy = resolve("starter/happy").entries[0]
    norms = shipped_norms(refusal.card.model_fingerprint)
    assert shipped_path(refusal.card.model_fingerprint).is_file() and len(norms) == 30
    guard = Guard([load_protected("starter/refusal")])
    assert guard.threshold == DEFAULT_THRESHOLD
    per_scale = sum(float(refusal.directions[la].norm()) / norms[la] for la in refusal.layers)
    assert guard.screen(Kit([KitEntry(refusal, -0.5 / per_scale)])) is not None
    happy_per_scale = sum(float(happy.vector.directions[la].norm()) / norms[la] for la in happy.active_layers())
    for sign in (1, -1):
        kit = Kit([KitEntry(happy.vector, sign * 0.7 / happy_per_scale, happy.layers)])
        assert guard.screen(kit) is None
