"""The bench's trained baselines on tiny models: the shared SFT loop's early stopping, full fine-tuning's size limit,
the end-of-turn token that ends each answer, and their costs and curves in a run's results."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import byte_tokenizer, chat_tiny_model, tiny_model
from transformers import AutoModelForCausalLM, LlamaConfig

from steerlab.errors import SteerlabError
from steerlab.evaluate.data import ABItem
from steerlab.evaluate.finetune import MAX_PARAMETERS, FinetuneConfig, check_size, train_finetune
from steerlab.evaluate.lora import LoraConfig, train_lora
from steerlab.evaluate.report import markdown, summarise
from steerlab.evaluate.runner import RunOptions, TaskSpec, run_task
from steerlab.evaluate.sft import SftConfig, answer_loss, encode, split_validation
from steerlab.evaluate.tasks import ABTask
from steerlab.models import wrap_model

TASK = ABTask()


def _items(n: int, start: int = 0) -> list[ABItem]:
    return [ABItem(f"Q{i}: agree?\n(A) yes\n(B) no", "(A)", "(B)") for i in range(start, start + n)]


def _val_loss(model, examples) -> float:
    with torch.no_grad():
        total, n = answer_loss(model, model.hf_model, encode(model, examples))
    return float(total) / n


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: a second thread only adds synchronisation (15x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def test_a_run_that_only_gets_worse_keeps_the_untrained_weights_and_stops_on_patience(model):
    train, val = TASK.sft_examples(_items(8), 1), TASK.sft_examples(_items(4, 20), 1)
    before = _val_loss(model, val)
    # A learning rate far too high for full fine-tuning: every step wrecks the model, so no epoch beats epoch 0.
    result = train_finetune(model, train, FinetuneConfig(epochs=10, patience=2, lr=0.5, batch_size=4), val)
    curve = result.curve
    assert curve.val[0] == pytest.approx(before, abs=1e-5)
    assert all(later > curve.val[0] for later in curve.val[1:])
    assert curve.best_epoch == 0 and len(curve.train) == 2 and curve.stopped_early
    assert _val_loss(result.model, val) == pytest.approx(before, abs=1e-4)  # the kept weights are epoch 0's
    assert _val_loss(model, val) == pytest.approx(before, abs=1e-5)  # the base model is untouched


def test_early_stopping_keeps_the_best_validation_epoch(model):
    train = TASK.sft_examples(_items(8), 1)
    val = TASK.sft_examples(_items(4, 20), 1)
    cfg = LoraConfig(epochs=6, patience=2, lr=5e-3, batch_size=4, min_delta=0.05)
    curve = (result := train_lora(model, train, cfg, val)).curve
    d = curve.as_dict()
    # The kept epoch is the last one that beat the best so far by min_delta; training stops `patience` epochs later.
    best, kept = curve.val[0], 0
    for epoch, loss in enumerate(curve.val[1:], start=1):
        if loss < best - cfg.min_delta:
            best, kept = loss, epoch
    assert curve.best_epoch == kept and d["best_val_loss"] == curve.val[kept]
    assert len(curve.train) == (kept + cfg.patience if curve.stopped_early else cfg.epochs)
    assert len(curve.val) == len(curve.train) + 1 and d["epochs_run"] == len(curve.train)
    assert len(curve.steps) == 2 * len(curve.train)  # 8 examples in batches of 4
    assert _val_loss(result.model, val) == pytest.approx(curve.val[kept], abs=1e-4)
    assert d["validation"] == "the task's validation items" and (d["n_train"], d["n_val"]) == (8, 4)


def test_training_is_deterministic_for_a_seed(model):
    train, val = TASK.sft_examples(_items(6), 1), TASK.sft_examples(_items(2, 20), 1)
    cfg = LoraConfig(epochs=2, lr=5e-3, batch_size=4, seed=3)
    assert train_lora(model, train, cfg, val).curve.val == train_lora(model, train, cfg, val).curve.val


def test_without_validation_examples_a_seeded_share_of_the_training_ones_is_held_out():
    examples = [(f"q{i}", "a") for i in range(10)]
    train, val, source = split_validation(examples, [], SftConfig(val_fraction=0.2, seed=1))
    assert len(val) == 2 and len(train) == 8 and not set(train) & set(val) and "held out" in source
    assert split_validation(examples, [], SftConfig(val_fraction=0.2, seed=1))[1] == val
    with pytest.raises(SteerlabError, match="at least 2 training examples"):
        split_validation(examples[:1], [], SftConfig())
    with pytest.raises(SteerlabError, match="at least one training example"):
        split_validation([], [("q", "a")], SftConfig())


def test_answers_end_with_the_chat_templates_end_of_turn_token():
    chat = chat_tiny_model()
    end = chat.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end != chat.tokenizer.eos_token_id
    ((seq, start),) = encode(chat, [("Hi", "yo")])
    assert seq[-1] == end and seq[start:-1] == chat.tokenizer("yo", add_special_tokens=False)["input_ids"]
    ((plain, _),) = encode(tiny_model("llama"), [("Hi", "yo")])  # no template: the tokenizer's EOS ends the answer
    assert plain[-1] == 0


def test_full_finetuning_refuses_models_above_half_a_billion_parameters():
    config = LlamaConfig(
        vocab_size=32000, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=16
    )
    with torch.device("meta"):  # the parameter count comes from the config; no weights are allocated
        big = wrap_model(AutoModelForCausalLM.from_config(config), byte_tokenizer(), name="big-llama")
    with pytest.raises(SteerlabError, match=r"up to 0\.5 B parameters and big-llama has 1\.\d\d B"):
        train_finetune(big, [("q", "a"), ("r", "b")])
    assert check_size(tiny_model("llama")) < MAX_PARAMETERS


def _opts(**changes) -> RunOptions:
    base = RunOptions(
        n_windows=1,
        scales=(0.5,),
        sweep=(0.5,),
        n_fluency=2,
        gen_tokens=4,
        k_shots=0,
        latency_rounds=1,
        conditions=("unsteered", "steering", "lora", "finetune"),
        lora=LoraConfig(epochs=2, lr=5e-3, batch_size=4),
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_a_run_records_both_fine_tunes_curves_and_every_methods_training_cost(model, tmp_path):
    from steerlab.evaluate.report import write_all

    torch.manual_seed(0)
    spec = TaskSpec("agree", TASK, _items(8), _items(3, 10), _items(4, 20), 1)
    result = run_task(model, spec, _opts())
    costs = result.costs
    for name in ("lora", "finetune"):
        curve = costs[f"{name}_curve"]
        assert len(curve["val_loss"]) == curve["epochs_run"] + 1 and curve["n_val"] == 3
        assert costs[f"{name}_train_s"] > 0 and len(costs[f"{name}_loss"]) == 2 * curve["epochs_run"]
    assert set(costs["training"]) == {"steering", "lora", "finetune"}
    for cost in costs["training"].values():
        assert cost["seconds"] > 0 and cost["peak_rss_mib"] >= 0
    assert costs["latency"]["method"] == "mean_diff"
    assert {"lora", "finetune"} <= {r["condition"] for r in result.rows if r["metric"] == "delta_p_match"}
    doc = write_all(tmp_path, [result], {"suite": "unit", "model": "tiny", "seed": 0, "threads": 1, "run_seconds": 1})
    assert (tmp_path / "agree" / "finetune_loss.png").stat().st_size > 0
    text = (tmp_path / "report.md").read_text()
    assert "## Training cost" in text and "| agree | finetune | finetune |" in text
    assert "## % of fine-tuning" in text and doc["summary"][0]["finetune_baseline"] in ("lora", "finetune")


def test_a_model_above_the_limit_gets_a_note_and_no_finetune_condition(model):
    torch.manual_seed(0)
    spec = TaskSpec("agree", TASK, _items(6), _items(2, 10), _items(3, 20), 1)
    limit = FinetuneConfig(epochs=1, max_parameters=1000)
    result = run_task(model, spec, _opts(conditions=("unsteered", "steering", "finetune"), finetune=limit))
    assert "finetune" not in {r["condition"] for r in result.rows}
    assert any(
        n.startswith("finetune: skipped (full fine-tuning is run for models up to") for n in result.info["notes"]
    )
    assert "finetune_curve" not in result.costs


def test_finetune_follows_loras_schedule_at_its_own_learning_rate(model):
    torch.manual_seed(0)
    spec = TaskSpec("agree", TASK, _items(6), _items(2, 10), _items(3, 20), 1)
    opts = _opts(conditions=("unsteered", "finetune"), lora=LoraConfig(epochs=1, patience=1, lr=5e-3, batch_size=4))
    curve = run_task(model, spec, opts).costs["finetune_curve"]
    assert curve["epochs_run"] == 1 and not math.isnan(curve["val_loss"][1])


def _share_task(lora: tuple[float, ...], finetune: tuple[float, ...], steering: tuple[float, ...]) -> dict:
    from steerlab.evaluate.stats import paired_diff_row, row

    base = [0.4, 0.5, 0.6, 0.5]
    rows = [row("ax", "unsteered", "p_match", base)]
    for name, shift in (("lora", lora), ("finetune", finetune), ("steering", steering)):
        after = [b + d for b, d in zip(base, shift, strict=True)]
        rows += [row("ax", name, "p_match", after), paired_diff_row("ax", name, "p_match", after, base)]
    info = {"goal": 1, "metric": "p_match", "n_test": 4, "n_train": 4, "task": "ab", "notes": []}
    calibration = {"layers": [1], "scale": 0.5, "within_budget": True, "n_val": 2, "budget": 0.1, "grid": []}
    return {"name": "ax", "rows": rows, "costs": {}, "info": info, "calibration": calibration}


def test_pct_of_finetuning_uses_the_stronger_significant_fine_tune():
    summary = summarise(_share_task(lora=(0.1,) * 4, finetune=(0.2,) * 4, steering=(0.05,) * 4))
    assert summary["finetune_baseline"] == "finetune" and summary["finetune_effect"] == pytest.approx(0.2)
    assert summary["pct_of_finetune"]["steering"] == pytest.approx(25.0)
    assert summary["pct_of_finetune"]["lora"] == pytest.approx(50.0) and not summary["pct_note"]
    weaker_full = summarise(_share_task(lora=(0.2,) * 4, finetune=(0.1,) * 4, steering=(0.05,) * 4))
    assert weaker_full["finetune_baseline"] == "lora" and weaker_full["pct_of_finetune"]["steering"] == pytest.approx(
        25.0
    )


def test_pct_of_finetuning_is_not_given_when_the_stronger_fine_tune_is_not_significant():
    # LoRA's mean effect is larger but its per-item differences straddle 0; full fine-tuning's is small but tight.
    summary = summarise(_share_task(lora=(0.5, -0.3, 0.4, -0.2), finetune=(0.02,) * 4, steering=(0.05,) * 4))
    assert summary["finetune_baseline"] == "lora" and summary["pct_of_finetune"] == {}
    assert "includes 0" in summary["pct_note"] and "LoRA" in summary["pct_note"]
    text = markdown({"meta": _meta(), "tasks": [{**_share_task((0.5, -0.3, 0.4, -0.2), (0.02,) * 4, (0.05,) * 4)}]})
    share_rows = [r for r in text.split("## % of fine-tuning", 1)[1].splitlines() if r.startswith("| ax |")]
    assert share_rows and "| n/s |" in share_rows[0] and "includes 0" in share_rows[0]
    against = summarise(_share_task(lora=(-0.2,) * 4, finetune=(-0.1,) * 4, steering=(0.05,) * 4))
    assert against["pct_of_finetune"] == {} and "against" in against["pct_note"]
    none = summarise({**_share_task((0.1,) * 4, (0.1,) * 4, (0.1,) * 4), "rows": []})
    assert none["finetune_baseline"] is None and none["pct_note"] == "no fine-tuned baseline ran"


def _meta() -> dict[str, object]:
    return {"suite": "test", "model": "tiny", "run_seconds": 1.0, "threads": 1, "seed": 0}
