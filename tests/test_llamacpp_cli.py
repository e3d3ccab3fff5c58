"""llama.cpp's own tool reads `steerlab export --format llama.cpp` and steers like steerlab's hooks.

`llama-completion` (llama.cpp's non-interactive tool) is built by `make llama-cpp-tools` (mk/formats.mk; part of
`make test`) from the llama.cpp source vendored in the llama-cpp-python sdist, in the same build as the shared
libraries that tests/test_llamacpp.py drives through the C API: one llama.cpp for both. The test extracts a vector
from the committed RepE slices, exports it with the CLI, and runs the tool on the default model's own GGUF with
exactly the flags the export printed: greedy, 8 tokens, the prompt steerlab renders (chat template) given as raw
text, no conversation mode. The steered completion must be exactly the one steerlab's hooks give. llama.cpp runs the
Q4_1 weights that Hugging Face runs dequantised in fp32, so both completions are also fed back through Hugging Face:
each token must be its greedy choice up to a near-tie, steered with the hooks and unsteered without them.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from contextlib import nullcontext
from importlib.metadata import version
from pathlib import Path

import pytest
import torch

from steerlab.extraction import extract
from steerlab.generation import decode, generate_ids
from steerlab.models import alias_gguf
from steerlab.pairs import PairSet
from steerlab.prompts import prompt_ids, render
from steerlab.steering import steer
from steerlab.vector import Vector

pytestmark = pytest.mark.slow

# The one llama.cpp build (mk/formats.mk): bin/llama-completion and lib/ with libllama and libggml*.
LLAMA_CPP = Path(sys.prefix) / f"llama.cpp-{version('llama-cpp-python')}-shared"
TOOL = LLAMA_CPP / "bin" / "llama-completion"
USER = "How was your weekend?"
LAYERS = "6-14"
SCALE = 0.6
N_TOKENS = 8
NEAR_TIE = 0.25  # logits: where Q4_1 and fp32 may pick different tokens


@pytest.fixture(scope="module")
def tool() -> Path:
    if not TOOL.is_file():  # a clear failure, not a skip: `make test` builds it
        pytest.fail(f"llama.cpp's llama-completion is missing at {TOOL}: run `make llama-cpp-tools`.")
    return TOOL


def happy_pairs(datasets: Path, n: int = 12) -> PairSet:
    happy = json.loads((datasets / "repe/emotions/happiness.json").read_text())[:n]
    sad = json.loads((datasets / "repe/emotions/sadness.json").read_text())[:n]
    prompt = "Tell me about something that happened to you."
    return PairSet.from_records(
        [{"prompt": p, "positive": h, "negative": s} for p, h, s in zip([prompt] * n, happy, sad, strict=True)]
    )


def export_flags(vector_path: Path, out: Path) -> list[str]:
    """Run `steerlab export` and return the llama.cpp flags it printed, as a shell would split them."""
    args = [sys.executable, "-m", "steerlab", "export", str(vector_path), "--format", "llama.cpp", "--out", str(out)]
    proc = subprocess.run(
        [*args, "--scale", str(SCALE), "--layers", LAYERS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(line for line in proc.stdout.splitlines() if line.startswith("--control-vector"))
    return shlex.split(line)


def llama_completion(tool: Path, prompt_file: Path, flags: list[str]) -> tuple[str, list[int]]:
    """Greedy completion of the prompt file's text; returns the generated text and the prompt's token ids."""
    # -bf reads the file verbatim (-f drops a final newline, and the chat prompt ends with one).
    args = [str(tool), "-m", str(alias_gguf("smollm2-135m")), "-bf", str(prompt_file), "-n", str(N_TOKENS)]
    args += ["--temp", "0", "--seed", "0", "-no-cnv", "--no-display-prompt", "--verbose-prompt", "--no-warmup"]
    args += ["-c", "256", "-t", "2", *flags]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{shlex.join(args)}\n{proc.stderr[-3000:]}"
    # --verbose-prompt lists the prompt's tokens on stderr as "   ID -> 'piece'".
    tokens = [int(m.group(1)) for m in re.finditer(r"^(?:[\d.]+ I)?\s*(\d+) -> '", proc.stderr, flags=re.MULTILINE)]
    return proc.stdout.removesuffix(" [end of text]\n").strip(), tokens


def greedy_gaps(model, prompt: list[int], text: str, steering: Vector | None) -> list[float]:
    """For each token of `text` after `prompt`: how far its logit is below the best one (0 = the greedy choice)."""
    generated = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    with torch.no_grad(), steer(model, steering, scale=SCALE) if steering is not None else nullcontext():
        logits = model.hf_model(input_ids=torch.tensor([prompt + generated]), use_cache=False).logits[0]
    rows = logits[len(prompt) - 1 : len(prompt) - 1 + len(generated)]
    return [float(row.max() - row[token]) for row, token in zip(rows, generated, strict=True)]


def test_llama_completion_with_the_exported_flags_steers_like_the_hooks(
    default_model, datasets, tool, tmp_path
) -> None:
    vector = extract(default_model, happy_pairs(datasets), layers=list(range(6, 15)), progress=False, name="happy")
    vector_path = tmp_path / "happy.safetensors"
    vector.save(vector_path)
    flags = export_flags(vector_path, tmp_path / "happy.gguf")
    gguf = tmp_path / "happy.gguf"
    assert flags == ["--control-vector-scaled", f"{gguf}:{SCALE:g}", "--control-vector-layer-range", "6", "14"]

    tok = default_model.tokenizer
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_bytes(render(tok, USER).encode())  # steerlab's rendering, chat template included
    ids = prompt_ids(tok, USER)
    cpp_plain, cpp_tokens = llama_completion(tool, prompt_file, [])
    cpp_steered, _ = llama_completion(tool, prompt_file, flags)
    assert cpp_tokens == ids  # llama.cpp reads the very tokens steerlab feeds the model

    hf_plain = decode(default_model, generate_ids(default_model, [ids], max_new_tokens=N_TOKENS)[0]).strip()
    steered_ids = generate_ids(default_model, [ids], steering=vector, scale=SCALE, max_new_tokens=N_TOKENS)[0]
    hf_steered = decode(default_model, steered_ids).strip()
    assert hf_steered != hf_plain and cpp_steered != cpp_plain, "the vector must change this completion in both"
    # The same greedy tokens as steerlab's hooks (each step's top-2 gap here is >= 0.24 logits under the hooks).
    assert cpp_steered == hf_steered, f"llama.cpp: {cpp_steered!r}; steerlab's hooks: {hf_steered!r}"
    # Every token llama.cpp chose is, fed back through Hugging Face, the greedy choice or within a quantisation
    # near-tie of it (Q4_1 in llama.cpp, fp32 here): steered under the hooks, and unsteered without them. The
    # unsteered text may differ from steerlab's where two tokens lie 0.08 logits apart ("a beautiful" / "a mix").
    assert max(greedy_gaps(default_model, ids, cpp_steered, vector)) < NEAR_TIE
    assert max(greedy_gaps(default_model, ids, cpp_plain, None)) < NEAR_TIE
    # The check tells steerings apart: llama.cpp's steered text is far from greedy for the unsteered model.
    assert max(greedy_gaps(default_model, ids, cpp_steered, None)) > 1.0
