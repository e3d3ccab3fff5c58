"""Reading conditions inside vLLM's forward: `steerlab::read_`, and the persistent buffers it reads and writes.

A conditional request's condition is read on its prompt, at the condition's block, before any steering there (what
the transformers engine reads). Per step, the host (steerlab.vllm.gating) gives each prompt token of an undecided
request a weight per condition column (reading "mean": 1 / prompt length; "last": 1 on the last prompt token, else
0) and the index of its request in the step; the request's directions and their blocks go in per-request rows. At
every layer the op adds `sum_t weight[t, c] * (stream[t] . direction[req(t), c])` into `scores[req, c]` for the
columns whose block is that layer. Summed over the prompt's prefill steps (chunked prefill splits a prompt), that is
exactly `Condition.scores` of the whole prompt, since a projection of a mean is the mean of the projections.

Like the steering op, it only reads buffers whose addresses never change, and while a CUDA graph is captured it
records its whole computation instead of following the host-side `live` flags (steerlab.vllm.op explains why).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steerlab.vllm.op import capturing, no_output

_LIBRARY = "steerlab"
OP_NAME = f"{_LIBRARY}::read_"


@dataclass(frozen=True)
class ReadShape:
    n_layers: int
    hidden: int
    max_requests: int  # requests in one step (vLLM's max_num_seqs)
    columns: int  # conditions per request
    max_tokens: int
    dtype: torch.dtype
    device: torch.device


class ReadBuffers:
    """What the read op uses: per-token request index and weights, per-request directions and blocks, the scores."""

    def __init__(self, shape: ReadShape) -> None:
        self.shape = shape
        s, c, h, dev = shape.max_requests, shape.columns, shape.hidden, shape.device
        self.token_req = torch.zeros(shape.max_tokens, dtype=torch.int64, device=dev)
        self.weights = torch.zeros(shape.max_tokens, c, dtype=torch.float32, device=dev)
        self.directions = torch.zeros(s, c, h, dtype=torch.float32, device=dev)
        self.blocks = torch.full((s, c), -1, dtype=torch.int64, device=dev)
        self.scores = torch.zeros(s, c, dtype=torch.float32, device=dev)
        self.live = torch.zeros(shape.n_layers, 1, dtype=torch.int64)  # on the host: layers read this step

    def layer_buffers(self, layer: int) -> tuple[torch.Tensor, ...]:
        """What the op reads for one layer, after (hidden, residual); the layer index goes last."""
        return (self.token_req, self.weights, self.directions, self.blocks, self.scores, self.live[layer])

    def reset(self, tokens: int) -> None:
        """Before a step that reads: nothing from the last one is left (only the first `tokens` rows were used)."""
        self.weights[:tokens].zero_()
        self.token_req[:tokens].zero_()
        self.blocks.fill_(-1)
        self.scores.zero_()
        self.live.zero_()


def _read_impl(
    hidden: torch.Tensor,
    residual: torch.Tensor,
    token_req: torch.Tensor,
    weights: torch.Tensor,
    directions: torch.Tensor,
    blocks: torch.Tensor,
    scores: torch.Tensor,
    live: torch.Tensor,
    layer: int,
) -> None:
    """hidden, residual [T, H] (residual may be empty); scores [S, C] (mutated); live [1] on the host."""
    if not capturing() and not int(live[0]):
        return
    count = hidden.shape[0]
    stream = (hidden + residual if residual.numel() > 0 else hidden).float()
    req = token_req[:count]
    here = (blocks.index_select(0, req) == layer).to(torch.float32)  # [T, C]: columns read at this block
    weighted = (weights[:count] * here).unsqueeze(-1) * stream.unsqueeze(1)  # [T, C, H]
    per_request = torch.zeros_like(directions).index_add_(0, req, weighted)
    scores.add_((per_request * directions).sum(-1))


def register() -> None:
    """Define `torch.ops.steerlab.read_` and its fake (once per process, like the steering op)."""
    if hasattr(torch.ops, _LIBRARY) and hasattr(getattr(torch.ops, _LIBRARY), "read_"):
        return
    op = torch.library.custom_op(OP_NAME, mutates_args=("scores",))(_read_impl)
    op.register_fake(no_output)


def read_(hidden: torch.Tensor, residual: torch.Tensor, *buffers: torch.Tensor, layer: int) -> None:
    """Call the registered op (registering it first if this process has not)."""
    register()
    torch.ops.steerlab.read_(hidden, residual, *buffers, layer)
