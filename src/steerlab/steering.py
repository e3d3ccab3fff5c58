"""Steering hooks: the one place where hooks that change a model's activations are installed.

A Plan (plan.py) is applied to a model for the life of a context (`steer`, `apply_plan`): one forward pre-hook on the
whole model notes each call's phase (prompt or generated tokens) and padding mask, and one forward hook per steered
decoder block adds (or projects out) the plan's directions in that block's output. A conditional plan's block hook
at a condition's layer reads the condition in prefill (`Plan.decide`) before it steers. Expert entries put a pre-hook
and a hook on the block's router, which add the plan's logit offsets inside it (steerlab.router.RoutedTokens).
Everything that steers comes through here: `generate`, the evaluation bench's settings, interference, preference
scoring and the server's batcher.

Other modules register hooks only to read block outputs, never to change them: capture.py (activations for
extraction; its hook may stop the forward once the deepest block it needs has run), interference/readout.py (the
unsteered model's block outputs over generated text) and residual_norms.py (per-token norms for relative doses).
Their hooks return nothing, so the model computes what it would without them. tests/test_architecture.py keeps it so.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from steerlab.errors import SteerlabError
from steerlab.kit import Mode, Positions
from steerlab.models import LoadedModel
from steerlab.plan import GENERATED, PROMPT, LayerOps, Plan, RowSteering, Steerable, compile_plan
from steerlab.router import Offsets, RoutedTokens, router_weight


class _CallState:
    """Per-forward facts the block hooks need: prompt or generated tokens, and which positions are padding."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.phase = PROMPT
        self.attention_mask: torch.Tensor | None = None
        # Every steered block of one forward sees the same shape: the padding mask is built once per call.
        self.valid_cache: dict[tuple[int, int, torch.dtype], torch.Tensor | None] = {}

    def pre_forward(self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # transformers 5 is renaming past_key_values to cache; accept either.
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        seen = 0
        if cache is not None:
            length = getattr(cache, "get_seq_length", None)
            seen = int(length()) if callable(length) else 0
        self.phase = GENERATED if seen > 0 else PROMPT
        mask = kwargs.get("attention_mask")
        self.attention_mask = mask if isinstance(mask, torch.Tensor) and mask.ndim == 2 else None
        self.valid_cache = {}
        if self.phase == PROMPT:
            self.plan.reset()  # a new prompt: its conditions are read afresh


def _valid(state: _CallState, hidden: torch.Tensor) -> torch.Tensor | None:
    """[B, T, 1] mask of real tokens, or None when every position is real (decode steps, unpadded batches)."""
    mask = state.attention_mask
    if mask is None or state.phase == GENERATED or mask.shape[0] != hidden.shape[0]:
        return None
    key = (hidden.shape[0], hidden.shape[1], hidden.dtype)
    if key not in state.valid_cache:
        state.valid_cache[key] = _padding_mask(mask, hidden)
    return state.valid_cache[key]


def _padding_mask(mask: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor | None:
    tail = mask[:, -hidden.shape[1] :]
    if bool(tail.all()):
        return None
    return tail.to(hidden.dtype).unsqueeze(-1)


def apply_ops(hidden: torch.Tensor, ops: LayerOps, valid: torch.Tensor | None) -> torch.Tensor:
    """Ablate, then add, then restore per-token norms where asked; padding positions are left alone."""
    for unit, coef in ops.ablate:
        unit3 = unit.unsqueeze(1)
        proj = (hidden * unit3).sum(-1, keepdim=True)
        delta = -coef.view(-1, 1, 1) * proj * unit3
        hidden = hidden + (delta if valid is None else delta * valid)
    if ops.add is None:
        return hidden
    before = hidden.norm(dim=-1, keepdim=True) if ops.keep_norm is not None else None
    add = ops.add.unsqueeze(1)
    steered = hidden + (add if valid is None else add * valid)
    if before is not None and ops.keep_norm is not None:
        rescaled = steered * (before / steered.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        steered = torch.where(ops.keep_norm.view(-1, 1, 1), rescaled, steered)
    return steered


def _block_hook(plan: Plan, layer: int, state: _CallState) -> Any:
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if plan.batch_size is not None and hidden.shape[0] != plan.batch_size:
            raise SteerlabError(
                f"per-row steering was built for {plan.batch_size} rows, but the batch has {hidden.shape[0]}. "
                "Give one entry per row (beam search and num_return_sequences multiply rows)."
            )
        if plan.gates is not None and state.phase == PROMPT:
            for condition in plan.gates.read_at(layer):
                plan.decide(condition, condition.scores(hidden, _valid(state, hidden)))
        ops = plan.ops[layer][state.phase]
        if not ops.changes_hidden:
            return output
        steered = apply_ops(hidden, ops, _valid(state, hidden))
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    return hook


def _router_hooks(model: LoadedModel, plan: Plan, layer: int, state: _CallState) -> tuple[Any, Any]:
    """A pre-hook that hands the router its input carrying this phase's offsets (steerlab.router.RoutedTokens),
    and a hook that checks they reached its logits."""
    router = model.anatomy.routers[layer]
    weight = router_weight(router, model.hidden_size)
    assert weight is not None  # anatomy keeps only modules that have one
    active: list[Offsets] = []

    def pre(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        active.clear()
        ops = plan.ops[layer][state.phase]
        if ops.router is None:
            return None
        offsets = Offsets(weight.shape, ops.router)
        active.append(offsets)
        if args and isinstance(args[0], torch.Tensor):
            return (RoutedTokens.wrap(args[0], offsets), *args[1:]), kwargs
        name = next((k for k, v in kwargs.items() if isinstance(v, torch.Tensor)), None)
        if name is None:
            return None  # the hook after the call says the offsets never reached the logits
        return args, {**kwargs, name: RoutedTokens.wrap(kwargs[name], offsets)}

    def post(_module: nn.Module, _args: Any, _output: Any) -> None:
        if active:
            active.pop().finish(router)

    return pre, post


def _install(model: LoadedModel, plan: Plan, state: _CallState, handles: list[Any]) -> None:
    """Register every hook, appending each handle at once so that a failure part-way leaves none behind."""
    handles.append(model.hf_model.register_forward_pre_hook(state.pre_forward, with_kwargs=True, prepend=True))
    for layer in plan.layers:
        # prepend: transformers records output_hidden_states with its own permanent block hooks; ours must run
        # first so that hidden_states[N + 1] (and anything else reading the block output) sees the steered value.
        hook = _block_hook(plan, layer, state)
        handles.append(model.layers[layer].register_forward_hook(hook, prepend=True))
    for layer in plan.router_layers:
        pre, post = _router_hooks(model, plan, layer, state)
        router = model.anatomy.routers[layer]
        handles.append(router.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(router.register_forward_hook(post))


@contextmanager
def apply_plan(model: LoadedModel, plan: Plan) -> Iterator[Plan]:
    """Install hooks for `plan`; they are removed on exit, on exceptions too."""
    handles: list[Any] = []
    try:
        _install(model, plan, _CallState(plan), handles)
        yield plan
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def steer(
    model: LoadedModel,
    what: Steerable | Sequence[RowSteering],
    scale: float | None = None,
    layers: Sequence[int] | None = None,
    positions: Positions | None = None,
    mode: Mode = "add",
) -> Iterator[Plan]:
    """Steer `model` inside the block. `what`: a Vector, a Kit, or a list with one of them (or None) per batch row.

    `scale`, `layers` and `positions` left out (None) come from a Vector's card (`KitEntry.from_card`: its
    recommended scale, 1.0 until calibrated; its recommended layers, else all; the positions it was calibrated on,
    else all); a Kit keeps its own. `positions`: "all", "prompt" or "generated" tokens; `mode`: "add", "ablate"
    (project the direction out, `scale` is the fraction removed) or "add_keep_norm". Nested contexts add up.
    """
    plan = compile_plan(model, what, scale=scale, layers=layers, positions=positions, mode=mode)
    with apply_plan(model, plan):
        yield plan
