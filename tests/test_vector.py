"""Vector: safetensors round trip, card, algebra, errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save, save_file

from steerlab import SteerlabError, Vector
from steerlab.vector import Card


def _vec(seed: int = 0, layers=(3, 4, 5), size: int = 16) -> Vector:
    gen = torch.Generator().manual_seed(seed)
    card = Card(
        base_model="m",
        model_fingerprint="abc",
        method="mean_diff",
        n_pairs=7,
        norms={3: 1.0},
        diagnostics={3: {"accuracy": 0.9}},
        recommended_layers=[3, 4],
        metadata={"k": [1, 2]},
    )
    return Vector({la: torch.randn(size, generator=gen) for la in layers}, card)


def test_save_load_is_bit_exact(tmp_path) -> None:
    vec = _vec()
    vec.directions[4] = vec.directions[4].to(torch.bfloat16)
    path = vec.save(tmp_path / "sub" / "v.safetensors")
    back = Vector.load(path)
    assert back.layers == vec.layers
    for layer in vec.layers:
        assert back.directions[layer].dtype == vec.directions[layer].dtype
        assert torch.equal(back.directions[layer], vec.directions[layer])
    assert back.card == vec.card
    assert back.to_bytes() == vec.to_bytes()
    assert back.content_hash() == vec.content_hash()
    assert list(tmp_path.joinpath("sub").iterdir()) == [path], "no temp file left behind"


def test_algebra() -> None:
    a, b = _vec(1), _vec(2, layers=(4, 5, 6))
    s = a + b
    assert s.layers == [3, 4, 5, 6]
    torch.testing.assert_close(s.directions[4], a.directions[4] + b.directions[4])
    torch.testing.assert_close(s.directions[3], a.directions[3])
    torch.testing.assert_close((a - b).directions[6], -b.directions[6])
    torch.testing.assert_close((2.5 * a).directions[5], a.directions[5] * 2.5)
    torch.testing.assert_close((-a).directions[3], -a.directions[3])
    for t in a.normalized().directions.values():
        assert float(t.norm()) == pytest.approx(1.0, abs=1e-6)
    ortho = a.orthogonalized(b)
    assert float(torch.dot(ortho.directions[4], b.directions[4]).abs()) < 1e-5
    torch.testing.assert_close(ortho.directions[3], a.directions[3])
    assert "derived" in s.card.metadata and s.card.norms == pytest.approx(s.norms())
    assert a.card.norms == {3: 1.0}, "algebra must not modify its operands"


def test_errors(tmp_path) -> None:
    with pytest.raises(SteerlabError, match="hidden size"):
        _ = _vec(size=16) + _vec(size=8)
    with pytest.raises(SteerlabError, match="at least one"):
        Vector({})
    with pytest.raises(SteerlabError, match="does not exist"):
        Vector.load(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SteerlabError, match="not a readable safetensors"):
        Vector.load(tmp_path / "junk.safetensors")
    save_file({"weights": torch.zeros(4)}, tmp_path / "other.safetensors")
    with pytest.raises(SteerlabError, match="unexpected tensor 'weights'"):
        Vector.load(tmp_path / "other.safetensors")
    with pytest.raises(SteerlabError, match="no direction for layers"):
        _vec().select([9])


def test_failed_save_keeps_the_old_file(tmp_path) -> None:
    path = _vec(1).save(tmp_path / "v.safetensors")
    before = path.read_bytes()
    bad = _vec(2)
    bad.card.metadata["unserialisable"] = object()
    with pytest.raises(TypeError):
        bad.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.safetensors"]


def test_from_bytes_is_the_one_way_bytes_become_a_vector(tmp_path) -> None:
    card = Card(name="v", recommended_layers=[1], recommended_scale=0.5)
    vec = Vector({0: torch.randn(8), 1: torch.randn(8, dtype=torch.float16)}, card)
    back = Vector.from_bytes(vec.to_bytes(), "memory")
    assert back.card.to_json() == vec.card.to_json()
    assert all(torch.equal(back.directions[k], vec.directions[k]) for k in vec.layers)
    assert Vector.load(vec.save(tmp_path / "v.safetensors")).card.to_json() == vec.card.to_json()
    bare = Vector.from_bytes(save({"direction.3": torch.ones(4)}), "repeng-ish")  # no card: says where it came from
    assert bare.layers == [3] and bare.card.metadata["imported_from"] == "repeng-ish"
    for data, message in [
        (b"", "memory is not a readable safetensors vector"),
        (b"\xff" * 16, "memory is not a readable safetensors vector"),
        (save({"weights": torch.ones(4)}), "unexpected tensor 'weights'"),
    ]:
        with pytest.raises(SteerlabError, match=message):
            Vector.from_bytes(data, "memory")
