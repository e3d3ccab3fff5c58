"""Ad-hoc runs on the user's own files: `steerlab bench --task KIND --pairs TRAIN --eval TEST`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError
from steerlab.evaluate.data import load_ab, load_labelled, load_mcq, load_minimal_pairs, load_prompts, shuffled
from steerlab.evaluate.runner import TaskSpec
from steerlab.evaluate.tasks import make_task
from steerlab.pairs import PairSet

SEED = 0


def load_items(kind: str, path: Path, role: str) -> list[Any]:
    """Items of the kind a task reads; `role` is "train" (extraction data) or "eval" (what is scored)."""
    if kind == "ab":
        return load_ab(path)
    if kind == "pair-logprob":
        return load_minimal_pairs(path)
    if kind == "mcq":
        return load_mcq(path)
    if kind == "classify":
        return load_labelled(path) if role == "train" else load_prompts(path)
    if kind == "fluency":
        return list(PairSet.load(path).pairs) if role == "train" else load_prompts(path)
    raise SteerlabError(f"unknown task {kind!r}: use ab, pair-logprob, mcq, classify or fluency.")


def adhoc_spec(
    kind: str,
    pairs: Path,
    eval_path: Path,
    max_pairs: int | None = None,
    val_size: int = 8,
    goal: int = 1,
    instruction: str | None = None,
    scorer: str = "sentiment",
    gen_tokens: int = 32,
) -> TaskSpec:
    """Train items from --pairs (validation split off them for logprob tasks), test items from --eval.

    For generation tasks (classify, fluency) the validation prompts are split off the --eval prompts instead,
    since the pair file holds sentences, not prompts. Items present in both files are dropped from the test set.
    """
    train = load_items(kind, pairs, "train")
    evaluation = load_items(kind, eval_path, "eval")
    options: dict[str, Any] = {"max_new_tokens": gen_tokens}
    if kind == "classify":
        options["scorer"] = scorer
    task = make_task(kind, **options)
    train = shuffled(train, SEED)
    notes = []
    if task.generates:
        if len(evaluation) <= val_size:
            raise SteerlabError(f"{eval_path} has {len(evaluation)} prompts; need more than --val-size {val_size}.")
        val, test = evaluation[:val_size], evaluation[val_size:]
    else:
        if len(train) <= val_size:
            raise SteerlabError(f"{pairs} has {len(train)} items; need more than --val-size {val_size}.")
        val, train = train[:val_size], train[val_size:]
        seen = {repr(i) for i in train} | {repr(i) for i in val}
        test = [i for i in evaluation if repr(i) not in seen]
        if len(test) < len(evaluation):
            notes.append(f"dropped {len(evaluation) - len(test)} test items that also appear in {pairs}")
    if max_pairs is not None:
        train = train[:max_pairs]
    if kind == "classify":
        pos, neg = [i for i in train if i.positive], [i for i in train if not i.positive]
        train = [x for pair in zip(pos, neg, strict=False) for x in pair]
    return TaskSpec(pairs.stem, task, train, val, test, goal, instruction, str(eval_path), notes)
