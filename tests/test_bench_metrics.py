"""Each bench metric on hand-made inputs with known answers (tiny random models for the mechanics)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import tiny_model

from steerlab.errors import SteerlabError
from steerlab.evaluate.data import ABItem, Labelled, MCQItem, MinimalPair, balanced_labelled, load_ab, split_disjoint
from steerlab.evaluate.fluency import fluency_scores, repetition_rate
from steerlab.evaluate.scoring import PLAIN, Setting, continuation_logprobs, render_ids
from steerlab.evaluate.stats import mean_ci, paired_diff_row, row
from steerlab.evaluate.tasks import ABTask, ClassifyTask, MCQTask, PairLogprobTask, make_task, mcq_prompt, vader_scorer
from steerlab.kit import Kit, KitEntry
from steerlab.vector import Vector


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def manual_logprob(model, user: str, continuation: str) -> float:
    """Reference: one unbatched forward over prompt + continuation, summing the continuation's log-probs."""
    prompt = render_ids(model, user, PLAIN)
    target = list(model.tokenizer(continuation, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([prompt + target])
    with torch.no_grad():
        logprobs = torch.log_softmax(model.hf_model(input_ids=ids).logits[0].float(), -1)
    return sum(float(logprobs[len(prompt) - 1 + k, tok]) for k, tok in enumerate(target))


def test_bootstrap_ci_is_deterministic_and_brackets_the_mean():
    values = [0.0, 1.0] * 20
    mean, lo, hi = mean_ci(values)
    assert mean == 0.5 and lo < 0.5 < hi and (lo, hi) == mean_ci(values)[1:]
    assert mean_ci([2.0]) == (2.0, 2.0, 2.0)
    assert mean_ci([1.0, math.nan, 3.0])[0] == 2.0
    assert row("t", "c", "m", [1.0, math.nan])["n"] == 1


def test_paired_difference_sees_a_shift_the_unpaired_intervals_hide():
    # Items differ a lot from each other; the condition adds exactly +0.1 to every one of them.
    before = [0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]
    after = [b + 0.1 for b in before]
    hi_before = mean_ci(before)[2]
    _, lo_after, _ = mean_ci(after)
    assert lo_after < hi_before  # the two conditions' own intervals overlap...
    paired = paired_diff_row("t", "steering", "p_match", after, before)
    assert paired["metric"] == "delta_p_match" and paired["n"] == 8
    assert paired["value"] == pytest.approx(0.1) and paired["ci"][0] == pytest.approx(0.1)  # ...the paired one is tight
    drop = paired_diff_row("t", "c", "m", [1.0, math.nan, 3.0], [0.0, 1.0, 1.0])
    assert drop["n"] == 2 and drop["value"] == 1.5
    with pytest.raises(ValueError, match="same items"):
        paired_diff_row("t", "c", "m", [1.0], [1.0, 2.0])


def test_summary_marks_conditions_whose_paired_difference_excludes_zero():
    from steerlab.evaluate.report import summarise

    rows = [
        row("ax", "unsteered", "p_match", [0.4, 0.6]),
        row("ax", "steering", "p_match", [0.5, 0.7]),
        row("ax", "lora", "p_match", [0.3, 0.7]),
        paired_diff_row("ax", "steering", "p_match", [0.5, 0.7], [0.4, 0.6]),
        paired_diff_row("ax", "lora", "p_match", [0.3, 0.7], [0.4, 0.6]),
    ]
    task = {"name": "ax", "rows": rows, "costs": {}, "info": {"goal": 1, "metric": "p_match", "n_test": 2}}
    summary = summarise(task)
    assert summary["significant"]["steering"] is True and summary["significant"]["lora"] is False
    assert summary["significant"]["prompting"] is None and not summary["lora_effect_significant"]
    assert summary["pct_of_finetune"] == {} and summary["finetune_baseline"] == "lora" and summary["pct_note"]


def test_repetition_rate_counts_repeated_trigrams():
    assert repetition_rate([1, 2, 3, 4, 5]) == 0.0
    assert repetition_rate([1, 2, 3, 1, 2, 3]) == pytest.approx(1 / 4)  # grams 123 231 312 123: one repeat
    assert repetition_rate([7] * 10) == pytest.approx(7 / 8)
    assert repetition_rate([1, 2]) == 0.0


def test_continuation_logprobs_match_an_unbatched_forward(model):
    requests = [("Q: 1+1?", ["(A", "(B"]), ("a much longer question here?", ["yes", "no way"])]
    got = continuation_logprobs(model, PLAIN, requests, token_budget=64)
    for (user, conts), scores in zip(requests, got, strict=True):
        for cont, score in zip(conts, scores, strict=True):
            assert score == pytest.approx(manual_logprob(model, user, cont), abs=1e-4)


def test_ab_metric_is_the_normalised_probability_of_the_matching_answer(model):
    item = ABItem("Pick one.\n(A) x\n(B) y", "(B)", "(A)")
    p = ABTask().evaluate(model, PLAIN, [item])["p_match"][0]
    lp_b, lp_a = manual_logprob(model, item.question, "(B"), manual_logprob(model, item.question, "(A")
    assert p == pytest.approx(math.exp(lp_b) / (math.exp(lp_a) + math.exp(lp_b)), abs=1e-4)


def test_pair_logprob_delta_and_preference(model):
    items = [MinimalPair("", "the cat sat", "the dog sat"), MinimalPair("p", "aaaa", "zq")]
    scores = PairLogprobTask().evaluate(model, PLAIN, items)
    for item, delta, pct in zip(items, scores["delta_logprob"], scores["pct_prefer_more"], strict=True):
        prompt = item.prompt or "Write one sentence."
        want = manual_logprob(model, prompt, item.more) - manual_logprob(model, prompt, item.less)
        assert delta == pytest.approx(want, abs=1e-4)
        assert pct == (100.0 if want > 0 else 0.0)


def test_mcq_accuracy_is_argmax_letter(model):
    items = [MCQItem("q1", ("w", "x", "y", "z"), k) for k in range(4)]
    scores = MCQTask().evaluate(model, PLAIN, items)
    lps = [manual_logprob(model, mcq_prompt(items[0]), letter) for letter in "ABCD"]
    best = lps.index(max(lps))
    assert scores["accuracy"] == [float(k == best) for k in range(4)]  # same question: exactly one item right
    assert sum(scores["p_correct"]) == pytest.approx(1.0, abs=1e-4)


def test_steering_changes_scores_through_steer(model):
    item = ABItem("Pick one.\n(A) x\n(B) y", "(A)", "(B)")
    vec = Vector({1: torch.randn(model.hidden_size) * 5, 2: torch.randn(model.hidden_size) * 5})
    plain = ABTask().evaluate(model, PLAIN, [item])["p_match"][0]
    steered = ABTask().evaluate(model, Setting("s", steering=Kit.single(vec, 2.0)), [item])["p_match"][0]
    assert steered != pytest.approx(plain, abs=1e-6)
    assert ABTask().evaluate(model, PLAIN, [item])["p_match"][0] == pytest.approx(plain)  # hooks were removed


def manual_steered_logprob(model, user: str, continuation: str, add: dict[int, torch.Tensor], phases: str) -> float:
    """Reference for phase-faithful scoring, with its own hooks: the prompt runs as a prefill and the continuation
    on its cache; `add[l]` goes into block l's output in the phases named ("prompt", "generated" or both)."""
    prompt = render_ids(model, user, PLAIN)
    target = list(model.tokenizer(continuation, add_special_tokens=False)["input_ids"])
    phase = {"now": "prompt"}

    def hook_for(layer):
        def hook(_m, _a, out):
            if phase["now"] not in phases:
                return out
            hidden = out[0] if isinstance(out, tuple) else out
            return (hidden + add[layer], *out[1:]) if isinstance(out, tuple) else hidden + add[layer]

        return hook

    blocks = model.hf_model.model.layers
    handles = [blocks[la].register_forward_hook(hook_for(la)) for la in add]
    try:
        with torch.no_grad():
            first = model.hf_model(input_ids=torch.tensor([prompt]), use_cache=True)
            total = float(torch.log_softmax(first.logits[0, -1].float(), -1)[target[0]])
            if len(target) > 1:
                phase["now"] = "generated"
                rest = model.hf_model(input_ids=torch.tensor([target[:-1]]), cache=first.past_key_values)
                logprobs = torch.log_softmax(rest.logits[0].float(), -1)
                total += sum(float(logprobs[k, tok]) for k, tok in enumerate(target[1:]))
    finally:
        for h in handles:
            h.remove()
    return total


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_continuation_scores_steer_the_answer_as_generated_tokens(model, positions):
    """A kit that steers only generated (or only prompt) positions acts on an answer exactly as it would in
    generation: the answer's first token is read off the prompt's last position, the rest off generated tokens."""
    torch.manual_seed(3)
    vec = Vector({1: torch.randn(model.hidden_size) * 4, 2: torch.randn(model.hidden_size) * 4})
    kit = Kit([KitEntry(vec, 1.5, positions=positions)])
    requests = [("Q: 1+1?", ["(A", "(B"]), ("a much longer question here?", ["yes it is", "no"])]
    got = continuation_logprobs(model, Setting("s", steering=kit), requests, token_budget=64)
    phases = ("prompt", "generated") if positions == "all" else (positions,)
    add = {la: 1.5 * d for la, d in vec.directions.items()}
    for (user, conts), scores in zip(requests, got, strict=True):
        for cont, score in zip(conts, scores, strict=True):
            assert score == pytest.approx(manual_steered_logprob(model, user, cont, add, phases), abs=1e-4)
            assert score != pytest.approx(manual_logprob(model, user, cont), abs=1e-3)


def test_vader_scorer_signs():
    pos, neg, neutral = vader_scorer(
        ["I love this, it is wonderful!", "This is awful and I hate it.", "It is a chair."]
    )
    assert pos > 0.5 and neg < -0.5 and neutral == 0.0


def test_fluency_scores_on_known_text(model):
    out = fluency_scores(model, ["hi", "hi"], ["abcabcabc", ""])
    assert out["fluency_logprob"][0] == pytest.approx(manual_logprob(model, "hi", "abcabcabc") / 9, abs=1e-4)
    assert math.isnan(out["fluency_logprob"][1])
    assert out["repetition"][0] == pytest.approx(4 / 7)


def test_classify_generates_and_scores(model):
    task = ClassifyTask(scorer="sentiment", max_new_tokens=4)
    scores = task.evaluate(model, PLAIN, ["hello", "tell me"])
    assert set(scores) == {"sentiment", "fluency_logprob", "repetition"}
    assert all(-1.0 <= s <= 1.0 for s in scores["sentiment"])
    pairs = task.extraction_pairs([Labelled("good", True), Labelled("bad", False)])
    assert len(pairs) == 1 and pairs.pairs[0].positive.completion == "good"


def test_registry_and_bad_input():
    assert make_task("ab").metric == "p_match"
    with pytest.raises(SteerlabError, match="unknown task"):
        make_task("nope")
    with pytest.raises(SteerlabError, match="asked for"):
        split_disjoint([1, 2, 3], [2, 2], seed=0)


def test_splits_are_disjoint_and_seeded():
    a, b, c = split_disjoint(list(range(50)), [10, 10, 20], seed=3)
    assert not (set(a) & set(b)) and not (set(a) & set(c)) and not (set(b) & set(c))
    assert (a, b, c) == tuple(split_disjoint(list(range(50)), [10, 10, 20], seed=3))
    balanced = balanced_labelled([Labelled(str(i), i % 3 == 0) for i in range(30)], 5, 0)
    assert [x.positive for x in balanced] == [True, False] * 5


def test_loaders_read_the_shared_formats(datasets, tmp_path):
    items = load_ab(datasets / "caa" / "test" / "refusal" / "test_dataset_ab.json")
    assert len(items) == 50 and items[0].matching.startswith("(")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(SteerlabError, match="lacks"):
        load_ab(bad)


def test_report_legend_names_the_test_the_run_used():
    from steerlab.evaluate.report import _legend

    # A pair-logprob axis's own metric is called delta_logprob: that is not a paired row.
    own = {"info": {"metric": "delta_logprob"}, "rows": [row("bias", "steering", "delta_logprob", [0.1, 0.2])]}
    assert "own 95% CI" in _legend({"tasks": [own]})
    paired = {**own, "rows": [*own["rows"], paired_diff_row("bias", "steering", "delta_logprob", [0.1], [0.0])]}
    assert "per-item difference" in _legend({"tasks": [paired]})
