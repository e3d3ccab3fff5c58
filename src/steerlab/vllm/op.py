"""The steering step as a registered torch op, `steerlab::steer_`: graph-safe because it only reads persistent tables.

The op mutates one decoder layer's output in place. Everything it reads lies in buffers whose addresses never
change (steerlab.vllm.tables): the per-token row index, and this layer's rows of additions, ablation units and
norm-keeping flags. Filling those buffers between steps changes what the op does without re-tracing, so
torch.compile (and CUDA graphs, where vLLM captures them) stay on. A registered fake lets the compiler trace it.

vLLM's decoder layers return `(hidden, residual)` with the residual add deferred to the next layer's norm: the
residual stream that steerlab's vectors are defined on is `hidden + residual`. Pure additions go into `hidden`
(the sum moves by exactly the vector); ablation and norm-keeping need the whole stream, so they are computed on the
sum and written back as `steered - residual`.

The host-side `live` flags let an eager or compiled step skip work, but a CUDA graph replays only the kernels its
capture recorded: Python control flow taken at capture is frozen. vLLM captures its graphs at warm-up, when no slot
is filled yet, so a capture that followed the flags would record no steering at all and replay none. While a graph
is being captured the op therefore records the whole computation (every ablation column, norm-keeping under its
per-row flag); zero rows make each part a no-op, and later fills change what the replay computes.
"""

from __future__ import annotations

import torch

# vLLM's plugin loader may run more than once in a process (engine core, workers): define the op once.
_LIBRARY = "steerlab"
OP_NAME = f"{_LIBRARY}::steer_"


def _steer_impl(
    hidden: torch.Tensor,
    residual: torch.Tensor,
    token_rows: torch.Tensor,
    add: torch.Tensor,
    units: torch.Tensor,
    coefs: torch.Tensor,
    keep_norm: torch.Tensor,
    live: torch.Tensor,
) -> None:
    """hidden [T, H] (mutated); residual [T, H] or empty; token_rows [>=T] int64; add [R, H]; units [R, K, H];
    coefs [R, K]; keep_norm [R]; live [3] int64 on the host:
    (anything steered here, ablations in use, any norm kept)."""
    if capturing():
        steered_any, n_ablate, any_keep = 1, units.shape[1], 1
    else:
        steered_any, n_ablate, any_keep = (int(x) for x in live.tolist())
    if not steered_any:
        return
    rows = token_rows[: hidden.shape[0]]
    if not n_ablate and not any_keep:
        hidden.add_(add.index_select(0, rows).to(hidden.dtype))
        return
    split = residual.numel() > 0
    stream = (hidden + residual) if split else hidden.clone()
    for k in range(n_ablate):
        unit = units[:, k].index_select(0, rows).to(stream.dtype)
        coef = coefs[:, k].index_select(0, rows).to(stream.dtype)
        stream = stream - (coef * (stream * unit).sum(-1)).unsqueeze(-1) * unit
    before = stream.norm(dim=-1, keepdim=True)
    stream = stream + add.index_select(0, rows).to(stream.dtype)
    if any_keep:
        rescaled = stream * (before / stream.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        keep = keep_norm.index_select(0, rows).to(torch.bool).unsqueeze(-1)
        stream = torch.where(keep, rescaled, stream)
    # Unsteered tokens keep their exact values: (hidden + residual) - residual is not hidden in low precision.
    steered = (rows != 0).unsqueeze(-1)
    hidden.copy_(torch.where(steered, stream - residual if split else stream, hidden))


def capturing() -> bool:
    """Whether a CUDA graph is being recorded on the current stream (see the module note)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def register() -> None:
    """Define `torch.ops.steerlab.steer_` (CPU and any other device: the body is plain torch) and its fake."""
    if hasattr(torch.ops, _LIBRARY) and hasattr(getattr(torch.ops, _LIBRARY), "steer_"):
        return
    op = torch.library.custom_op(OP_NAME, mutates_args=("hidden",))(_steer_impl)
    op.register_fake(no_output)


def no_output(*args: object) -> None:
    """The fake (what the compiler traces) of an op that only mutates its arguments: no output to describe."""
    return None


def steer_(
    hidden: torch.Tensor,
    residual: torch.Tensor,
    token_rows: torch.Tensor,
    add: torch.Tensor,
    units: torch.Tensor,
    coefs: torch.Tensor,
    keep_norm: torch.Tensor,
    live: torch.Tensor,
) -> None:
    """Call the registered op (registering it first if this process has not)."""
    register()
    torch.ops.steerlab.steer_(hidden, residual, token_rows, add, units, coefs, keep_norm, live)
