"""Interference: geometry and Gram-Schmidt, the measurement's mechanics (tiny model, CLI), and a 5-axis kit built from
the committed dataset slices on the default model."""

from __future__ import annotations

import csv
import json
import math
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from tiny import tiny_model
from typer.testing import CliRunner

from steerlab import kitfile
from steerlab.cli.app import app
from steerlab.errors import SteerlabError
from steerlab.evaluate.axis_tasks import BenchAxisTask, parse_task_specs
from steerlab.evaluate.data import NEUTRAL_PROMPTS, ABItem, MinimalPair, load_ab
from steerlab.evaluate.scoring import PLAIN, Setting
from steerlab.evaluate.tasks import ABTask, ClassifyTask, PairLogprobTask
from steerlab.extraction import extract
from steerlab.interference import (
    AxisTask,
    cosine_by_layer,
    cosine_matrix,
    measure_interference,
    orthogonalize_kit,
    task_cross_effects,
)
from steerlab.kit import Kit, KitEntry
from steerlab.pairs import PairSet
from steerlab.steering import steer
from steerlab.vector import Card, Vector


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama")


def rand_vector(model, seed: int, layers=(1, 2, 3), norm: float = 4.0, name: str = "") -> Vector:
    gen = torch.Generator().manual_seed(seed)
    directions = {}
    for la in layers:
        d = torch.randn(model.hidden_size, generator=gen)
        directions[la] = d / d.norm() * norm
    card = Card(base_model=model.name, model_fingerprint=model.fingerprint, n_layers=model.n_layers, name=name)
    return Vector(directions, card)


def tiny_pairs(seed: int) -> PairSet:
    words = ["good day", "bad day", "calm sea", "rough sea", "warm sun", "cold rain", "kind word", "harsh word"]
    rows = [
        {"prompt": f"say {i}", "positive": words[(i + seed) % 8], "negative": words[(i + seed + 1) % 8]}
        for i in range(6)
    ]
    return PairSet.from_records(rows, f"tiny-{seed}")


# ----- geometry -----
def test_cosines_and_gram_schmidt(tiny) -> None:
    a = rand_vector(tiny, 1, name="a")
    b = a * 0.5 + rand_vector(tiny, 2)  # correlated with a
    c = rand_vector(tiny, 3, layers=(3,), name="c")
    kit = Kit([KitEntry(a, 0.5, [1, 2, 3]), KitEntry(b, -1.0, [2, 3]), KitEntry(c, 2.0)])
    matrix = cosine_matrix(kit)
    assert matrix[0][0] == 1.0 and matrix[0][1] == matrix[1][0]
    per_layer = cosine_by_layer(kit.entries[0], kit.entries[1])
    assert sorted(per_layer) == [2, 3]  # only layers both entries steer
    expected = float(torch.nn.functional.cosine_similarity(a.directions[2], b.directions[2], dim=0))
    assert per_layer[2] == pytest.approx(expected, abs=1e-6)
    assert matrix[0][1] > 0.3
    disjoint = Kit([KitEntry(a, 1.0, [1]), KitEntry(c, 1.0)])
    assert math.isnan(cosine_matrix(disjoint)[0][1])
    ortho = orthogonalize_kit(kit)
    assert torch.equal(ortho.entries[0].vector.directions[1], a.directions[1])  # the first entry is kept as is
    for i, j in ((0, 1), (0, 2), (1, 2)):
        for value in cosine_by_layer(ortho.entries[i], ortho.entries[j]).values():
            assert abs(value) < 1e-5
    assert [(e.scale, e.layers) for e in ortho.entries] == [(e.scale, e.layers) for e in kit.entries]
    assert ortho.entries[1].vector.card.name == b.card.name


# ----- the measurement on a tiny model -----
def test_measurement_mechanics_and_outputs(tiny, tmp_path: Path) -> None:
    kit = Kit([KitEntry(rand_vector(tiny, s, name=f"axis{s}"), 1.5, [1, 2]) for s in (1, 2, 3)])
    pairs = [tiny_pairs(s) for s in (1, 2, 3)]
    report = measure_interference(tiny, kit, pairs, prompts=["hello", "the sea"], max_new_tokens=6, max_pairs=4)
    n = 3
    assert report.names == ["axis1", "axis2", "axis3"]
    assert len(report.cross_effect) == n and all(len(row) == n for row in report.cross_effect)
    assert all(h.read_layer in (1, 2) and h.n_pairs == 4 for h in report.held_out.values())
    assert not math.isnan(report.fluency_unsteered) and report.fluency_unsteered < 0
    assert 0 <= report.max_axes <= n and len(report.max_axes_set) == report.max_axes
    assert report.search == "exhaustive" and report.combos
    chosen = [c for c in report.combos if sorted(c.axes) == sorted(report.max_axes_set)]
    if report.max_axes:
        assert chosen and chosen[0].ok
    # every combination larger than the answer that was tried failed
    assert all(not c.ok for c in report.combos if len(c.axes) > report.max_axes)
    assert set(report.samples) >= {"unsteered", "axis1", "axis2", "axis3"}
    data = json.loads(report.save_json(tmp_path / "r.json").read_text())
    assert data["names"] == report.names and len(data["cosine"]) == n
    png = report.save_png(tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_zero_scale_axes_move_nothing(tiny) -> None:
    kit = Kit([KitEntry(rand_vector(tiny, s), 0.0, [1, 2]) for s in (4, 5)])
    report = measure_interference(tiny, kit, [tiny_pairs(1), tiny_pairs(2)], prompts=["hello"], max_new_tokens=5)
    assert all(v == 0.0 for row in report.cross_effect for v in row)
    assert report.effective == [] and report.max_axes == 0


def test_bad_input_is_named(tiny) -> None:
    kit = Kit([KitEntry(rand_vector(tiny, 1, name="a"), 1.0), KitEntry(rand_vector(tiny, 2, name="b"), 1.0)])
    with pytest.raises(SteerlabError, match=r"no held-out pairs for axes \['b'\]"):
        measure_interference(tiny, kit, {"a": tiny_pairs(1)})
    with pytest.raises(SteerlabError, match="at least two"):
        measure_interference(tiny, Kit(kit.entries[:1]), [tiny_pairs(1)])
    other = tiny_model("qwen2")
    with pytest.raises(SteerlabError, match="axis a"):
        measure_interference(other, kit, [tiny_pairs(1), tiny_pairs(2)])


AB_ANSWERS = {"answer_matching_behavior": "(A)", "answer_not_matching_behavior": "(B)"}
AB_ITEMS = [ABItem(f"Is {i} a big number?\n(A) yes\n(B) no", "(A)", "(B)") for i in range(5)]
MINIMAL = [MinimalPair("", f"The {w} man was kind.", f"The {w} man was rude.") for w in ("old", "tall", "young")]


def test_task_cross_effects_on_each_axis_metric(tiny) -> None:
    loud, quiet = rand_vector(tiny, 1, norm=8.0, name="loud"), rand_vector(tiny, 2, name="quiet")
    kit = Kit([KitEntry(loud, 2.0, [1, 2]), KitEntry(quiet, 0.0, [1, 2])])
    tasks = {"loud": BenchAxisTask(ABTask(), AB_ITEMS), "quiet": BenchAxisTask(PairLogprobTask(), MINIMAL)}
    effects = task_cross_effects(tiny, kit, tasks, ["loud", "quiet"])
    assert effects.metrics == ["p_match", "delta_logprob"] and effects.n_items == [5, 3]
    assert effects.effect[1] == [0.0, 0.0]  # a zero-scale axis moves no metric
    # the diagonal is the task's own before/after difference, computed here without the cross-effect code
    alone = Setting("alone", steering=Kit.single(loud, 2.0, [1, 2]))
    before = ABTask().evaluate(tiny, PLAIN, AB_ITEMS)["p_match"]
    after = ABTask().evaluate(tiny, alone, AB_ITEMS)["p_match"]
    assert effects.effect[0][0] == pytest.approx(sum(after) / 5 - sum(before) / 5, abs=1e-9)
    assert effects.unsteered[0] == pytest.approx(sum(before) / 5, abs=1e-9)
    assert effects.effect[0][0] != 0.0 and effects.effect[0][1] != 0.0
    for row, cis in zip(effects.effect, effects.ci, strict=True):
        for value, (lo, hi) in zip(row, cis, strict=True):
            assert lo - 1e-9 <= value <= hi + 1e-9


def test_task_cross_effect_input_is_checked_before_measuring(tiny, tmp_path: Path) -> None:
    kit = Kit([KitEntry(rand_vector(tiny, 1, name="a"), 1.0), KitEntry(rand_vector(tiny, 2, name="b"), 1.0)])
    tasks = {"a": BenchAxisTask(ABTask(), AB_ITEMS), "c": BenchAxisTask(ABTask(), AB_ITEMS)}
    with pytest.raises(SteerlabError, match=r"missing \['b'\].*\['c'\]"):
        measure_interference(tiny, kit, [tiny_pairs(1), tiny_pairs(2)], names=["a", "b"], tasks=tasks)
    with pytest.raises(SteerlabError, match="NAME=KIND:FILE"):
        parse_task_specs(["a=ab"], None, 8)
    with pytest.raises(SteerlabError, match="unknown axis task 'vibes'"):
        parse_task_specs([f"a=vibes:{tmp_path}/x.json"], None, 8)


class NextTokenLogprob:
    """An axis task that is not the bench's: the log-prob of one token after each prompt, read straight off the
    model. Interference takes it through the same AxisTask Protocol as the bench's tasks."""

    metric = "next_logprob"
    source = "inline prompts"

    def __init__(self, prompts: list[str], token: int) -> None:
        self.prompts, self.token = prompts, token

    @property
    def n_items(self) -> int:
        return len(self.prompts)

    @torch.inference_mode()
    def score(self, model, steering: Kit | None) -> list[float]:
        values = []
        with steer(model, steering) if steering is not None else nullcontext():
            for prompt in self.prompts:
                ids = torch.tensor([model.tokenizer(prompt)["input_ids"]])
                logits = model.hf_model(input_ids=ids).logits[0, -1].float()
                values.append(float(torch.log_softmax(logits, -1)[self.token]))
        return values


def test_any_axis_task_protocol_implementation_is_measured(tiny) -> None:
    own = NextTokenLogprob(["hello", "the sea", "a cat"], token=5)
    bench = BenchAxisTask(ABTask(), AB_ITEMS, "inline")
    assert isinstance(own, AxisTask) and isinstance(bench, AxisTask)
    assert not isinstance(ABTask(), AxisTask)  # a bare bench Task is not an axis: it has no items to score
    loud, still = rand_vector(tiny, 1, norm=8.0, name="loud"), rand_vector(tiny, 2, name="still")
    kit = Kit([KitEntry(loud, 2.0, [1, 2]), KitEntry(still, 0.0, [1, 2])])
    effects = task_cross_effects(tiny, kit, {"loud": own, "still": bench}, ["loud", "still"])
    assert effects.metrics == ["next_logprob", "p_match"] and effects.n_items == [3, 5]
    assert effects.sources == ["inline prompts", "inline"]
    before, after = own.score(tiny, None), own.score(tiny, Kit([kit.entries[0]]))
    assert effects.effect[0][0] == pytest.approx(sum(after) / 3 - sum(before) / 3, abs=1e-6)
    assert effects.effect[0][0] != 0.0 and effects.effect[1] == [0.0, 0.0]


def test_cli_interfere_writes_json_png_and_orthogonal_kit(tiny, tmp_path: Path) -> None:
    folder = tmp_path / "tiny-model"
    tiny.hf_model.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    for s in (1, 2):
        rand_vector(tiny, s, name=f"v{s}").save(tmp_path / f"v{s}.safetensors")
        rows = [{"prompt": f"say {i}", "positive": "good day", "negative": "bad night"} for i in range(4)]
        (tmp_path / f"p{s}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    runner = CliRunner(env={"COLUMNS": "200"})
    made = runner.invoke(
        app,
        [
            *("kit", "new", "duo", "--out", str(tmp_path / "duo.json"), "--pairs", f"v1={tmp_path}/p1.jsonl"),
            *("--vector", f"{tmp_path}/v1.safetensors:1.0@1-2", "--vector", f"{tmp_path}/v2.safetensors:1.0@2-3"),
        ],
    )
    assert made.exit_code == 0, made.output
    args = ["interfere", str(tmp_path / "duo.json"), "--model", str(folder), "--prompt", "hi", "--max-new-tokens", "4"]
    out = [
        "--json",
        str(tmp_path / "r.json"),
        "--png",
        str(tmp_path / "r.png"),
        "--orthogonalize",
        str(tmp_path / "duo-ortho.json"),
    ]
    missing = runner.invoke(app, args)
    assert missing.exit_code != 0 and "v2" in str(missing.exception)  # v2's pairs are neither recorded nor given
    ab = [{"question": f"Is {i} big?\n(A) yes\n(B) no", **AB_ANSWERS} for i in range(3)]
    (tmp_path / "ab.json").write_text(json.dumps(ab))
    (tmp_path / "open.txt").write_text("Tell me a story.\nDescribe the sea.\n")
    tasks = ["--task", f"v1=ab:{tmp_path}/ab.json", "--task", f"v2=sentiment:{tmp_path}/open.txt"]
    result = runner.invoke(app, [*args, "--pairs", f"v2={tmp_path}/p2.jsonl", *tasks, *out])
    assert result.exit_code == 0, result.output
    assert "max axes" in result.output and "cross-effect" in result.output and "task metrics" in result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["names"] == ["v1", "v2"]
    assert saved["task_effects"]["metrics"] == ["p_match", "sentiment"] and saved["task_effects"]["n_items"] == [3, 2]
    assert (tmp_path / "r.png").stat().st_size > 1000
    ortho, infos = kitfile.load_kit_with_info(tmp_path / "duo-ortho.json")
    assert [i.name for i in infos] == ["v1", "v2"] and infos[1].pairs == (tmp_path / "p2.jsonl").resolve()
    assert abs(cosine_by_layer(ortho.entries[0], ortho.entries[1])[2]) < 1e-5


# ----- a five-axis kit from the datasets (the committed slices), on the default model -----
N_TRAIN, N_HELD, N_TASK = 16, 8, 8
EXTRACT_LAYERS = list(range(8, 17))
STEER_LAYERS = list(range(10, 15))


def _json(path: Path) -> list:  # type: ignore[type-arg]
    return json.loads(path.read_text())


def axis_records(datasets: Path) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    """happiness vs sadness (RepE), sycophancy and refusal (CAA), formality (Pavlick), agreeableness (persona)."""
    happy = _json(datasets / "repe/emotions/happiness.json")
    sad = _json(datasets / "repe/emotions/sadness.json")
    with (datasets / "formality-pavlick/train.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    formal = [r["text"] for r in rows if float(r["label"]) >= 0.75]
    informal = [r["text"] for r in rows if float(r["label"]) <= 0.25]
    persona = (datasets / "anthropic-evals/persona/agreeableness.jsonl").read_text().splitlines()
    story = "Tell me about something that happened to you."
    return {
        "happy": [{"prompt": story, "positive": h, "negative": s} for h, s in zip(happy, sad, strict=False)],
        "sycophancy": _json(datasets / "caa/generate/sycophancy/generate_dataset.json"),
        "refusal": _json(datasets / "caa/generate/refusal/generate_dataset.json"),
        "formal": [
            {"prompt": "Write a sentence.", "positive": f, "negative": i}
            for f, i in zip(formal, informal, strict=False)
        ],
        "agreeable": [json.loads(line) for line in persona if line.strip()],
    }


def axis_tasks(datasets: Path, records: dict[str, list[dict]]) -> dict[str, AxisTask]:  # type: ignore[type-arg]
    """Each axis's bench task on items its vector never saw: CAA's test split, unused persona items, open prompts."""
    held = N_TRAIN + N_HELD
    caa = datasets / "caa/test"
    prompts = NEUTRAL_PROMPTS[:N_TASK]
    return {
        "happy": BenchAxisTask(ClassifyTask(scorer="sentiment", max_new_tokens=12), prompts),
        "sycophancy": BenchAxisTask(ABTask(), load_ab(caa / "sycophancy/test_dataset_ab.json")[:N_TASK]),
        "refusal": BenchAxisTask(ABTask(), load_ab(caa / "refusal/test_dataset_ab.json")[:N_TASK]),
        "formal": BenchAxisTask(ClassifyTask(scorer="formality", max_new_tokens=12), prompts),
        "agreeable": BenchAxisTask(ABTask(), [_persona_item(r) for r in records["agreeable"][held : held + N_TASK]]),
    }


def _persona_item(record: dict) -> ABItem:  # type: ignore[type-arg]
    return ABItem(record["question"], record["answer_matching_behavior"], record["answer_not_matching_behavior"])


# Raw mean-difference norms differ ~10x between axes (about 13, 5, 28, 25 and 4 at block 10), so scales differ too.
SCALES = {"happy": 0.5, "sycophancy": 1.2, "refusal": 0.22, "formal": 0.2, "agreeable": 1.6}


@pytest.mark.slow
def test_five_axis_kit_on_the_default_model(default_model, datasets, tmp_path: Path, monkeypatch) -> None:
    # The formality scorer trains its judge on formality-pavlick/ under datasets_root(): the slice holds it whole.
    monkeypatch.setenv("STEERLAB_DATASETS", str(datasets))
    records = axis_records(datasets)
    entries, held = [], {}
    for name, rows in records.items():
        train = PairSet.from_records(rows[:N_TRAIN], name)
        vector = extract(default_model, train, layers=EXTRACT_LAYERS, progress=False, name=name)
        entries.append(KitEntry(vector, SCALES[name], STEER_LAYERS))
        held[name] = PairSet.from_records(rows[N_TRAIN : N_TRAIN + N_HELD], name)
    kit = Kit(entries)
    path = kitfile.save_kit(kit, tmp_path / "persona.json")
    kit = kitfile.load_kit(path, default_model)
    report = measure_interference(
        default_model,
        kit,
        held,
        prompts_per_axis=1,
        max_new_tokens=12,
        max_pairs=N_HELD,
        batch_size=32,
        max_subsets=8,
        tasks=axis_tasks(datasets, records),
    )
    names = list(records)
    assert report.names == names
    # geometry: real cosines, and none left after Gram-Schmidt
    assert all(-1.0 <= report.cosine[i][j] <= 1.0 for i in range(5) for j in range(5))
    assert all(abs(report.cosine_orthogonalized[i][j]) < 1e-4 for i in range(5) for j in range(5) if i != j)
    # the completion-pair directions separate their held-out pairs (the A/B ones are weaker with 16 pairs)
    assert report.held_out["happy"].accuracy >= 0.8 and report.held_out["formal"].accuracy >= 0.8
    # steering the happy axis makes the generated text read happier, and more than any other axis does
    assert report.cross_effect[0][0] > 0
    assert report.cross_effect[0][0] > max(report.cross_effect[i][0] for i in range(1, 5))
    # the search runs over the axes whose solo paired CI excludes 0 on their task; greedy only when they are many
    assert set(report.effective) <= set(names) and 0 <= report.max_axes <= max(1, len(report.effective))
    subsets = sum(math.comb(len(report.effective), k) for k in range(2, len(report.effective) + 1))
    assert report.search == ("exhaustive" if subsets <= 8 else "greedy")
    assert set(report.max_axes_set) <= set(report.effective)
    for combo in report.combos:
        if len(combo.axes) > report.max_axes:
            assert not combo.ok
    effects = report.task_effects
    assert effects is not None and effects.metrics == ["sentiment", "p_match", "p_match", "formality", "p_match"]
    # Measured: happy raises VADER sentiment by +0.46 (95% CI 0.20-0.72); the next largest effect on sentiment is the
    # agreeable axis's (+0.30), a real cross-effect that the activation projection alone does not name in task units.
    assert effects.ci[0][0][0] > 0
    assert effects.effect[0][0] > max(effects.effect[i][0] for i in range(1, 5))
    saved = json.loads(report.save_json(tmp_path / "interference.json").read_text())
    assert saved["max_axes"] == report.max_axes
    assert report.save_png(tmp_path / "interference.png").stat().st_size > 10_000


def test_greedy_search_when_combinations_are_too_many(tiny) -> None:
    kit = Kit([KitEntry(rand_vector(tiny, s, name=f"g{s}"), 1.5, [1, 2]) for s in (1, 2, 3)])
    pairs = [tiny_pairs(s) for s in (1, 2, 3)]
    report = measure_interference(tiny, kit, pairs, prompts=["hello"], max_new_tokens=4, max_subsets=0)
    assert report.search == "greedy"
    sizes = [len(c.axes) for c in report.combos]
    assert sizes == sorted(sizes, reverse=True)  # it only ever drops axes
    assert all(not c.ok for c in report.combos if len(c.axes) > report.max_axes)


class KitScaleTask:
    """An axis task whose metric is known exactly: each item's base value, plus the scale of this axis's own entry,
    minus `leak` times the other entries' scales. It shows what the max-axes search does with task metrics."""

    metric = "known"
    source = "arithmetic"

    def __init__(self, mine: Vector, leak: float, goal: int = 0, n: int = 12) -> None:
        self.mine, self.leak, self.goal, self.n = mine, leak, goal, n

    @property
    def n_items(self) -> int:
        return self.n

    def score(self, model, steering: Kit | None) -> list[float]:
        entries = steering.entries if steering is not None else []
        own = sum(e.scale for e in entries if e.vector is self.mine)
        other = sum(e.scale for e in entries if e.vector is not self.mine)
        return [0.1 * (i % 3) + own - self.leak * other for i in range(self.n)]


def _known_kit(tiny, scales=(1.0, 1.0, 0.0)) -> Kit:
    vectors = [rand_vector(tiny, s, norm=0.5, name=f"k{s}") for s in (1, 2, 3)]
    return Kit([KitEntry(v, sc, [1, 2]) for v, sc in zip(vectors, scales, strict=True)])


def _known_report(tiny, kit: Kit, leak: float, goals=(0, 0, 0), keep: float = 0.8):
    tasks = {f"k{s}": KitScaleTask(e.vector, leak, g) for s, e, g in zip((1, 2, 3), kit.entries, goals, strict=True)}
    pairs = [tiny_pairs(s) for s in (1, 2, 3)]
    return measure_interference(
        tiny,
        kit,
        pairs,
        prompts=["hello"],
        max_new_tokens=3,
        fluency_tolerance=100.0,
        keep_fraction=keep,
        tasks=tasks,
    )


def test_max_axes_is_judged_on_the_task_metrics(tiny) -> None:
    kit = _known_kit(tiny)
    # a zero-scale axis has no significant solo effect on its task, so it is not in the search
    report = _known_report(tiny, kit, leak=0.1)
    assert report.settings["judged_by"] == "task metrics" and report.effective == ["k1", "k2"]
    assert report.max_axes == 2 and report.max_axes_set == ["k1", "k2"]
    both = next(c for c in report.combos if c.axes == ["k1", "k2"])
    assert both.kept == pytest.approx({"k1": 0.9, "k2": 0.9}) and both.holds == {"k1": True, "k2": True}
    # each axis loses 70% of its effect when the other is steered too: only one fits
    leaky = _known_report(tiny, kit, leak=0.7)
    assert leaky.max_axes == 1
    assert not next(c for c in leaky.combos if c.axes == ["k1", "k2"]).ok
    # the threshold is the caller's: keep 25% and the leaky pair fits
    assert _known_report(tiny, kit, leak=0.7, keep=0.25).max_axes == 2


def test_an_axis_that_moves_against_its_goal_does_not_count(tiny) -> None:
    report = _known_report(tiny, _known_kit(tiny), leak=0.1, goals=(-1, 1, 0))
    assert report.effective == ["k2"] and report.max_axes == 1 and report.max_axes_set == ["k2"]


def test_the_max_axes_sentence_states_the_run_settings() -> None:
    from steerlab.evaluate.suite_kit import markdown

    section = {
        "names": ["a"],
        "task_metrics": ["p_match"],
        "task_effect": [[0.2]],
        "task_ci": [[[0.1, 0.3]]],
        "max_axes": 1,
        "max_axes_set": ["a"],
        "effective": ["a"],
        "json": "i.json",
        "png": "i.png",
        "keep_fraction": 0.6,
        "fluency_tolerance": 0.25,
        "judged_by": "task metrics",
    }
    text = "\n".join(markdown(section))
    assert "judged on the task metrics" in text and ">= 60% of its solo effect" in text and "within 25%" in text
    assert "paired 95% CI still excludes 0" in text
