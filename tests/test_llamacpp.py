"""Proof that llama.cpp reads steerlab's control-vector GGUFs and steers the way the Hugging Face hooks do.

llama-cpp-python is installed by `make llama-cpp` (mk/formats.mk; part of `make test`) without a library of its own:
it loads the shared libllama built with llama-completion, found through LLAMA_CPP_LIB_PATH. The GGUF is read back
here with the `gguf` package and applied through llama.cpp's low-level `llama_set_adapter_cvec`, mirroring what
llama.cpp's own `--control-vector-scaled` loader does: `direction.N` goes to row N - 1 of an n_embd x (n_layer - 1)
buffer, multiplied by the scale. The default model's GGUF is Q4_1 while Hugging Face runs it dequantised in fp32, so
the test compares logit SHIFTS (steered minus unsteered), not raw logits.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from test_llamacpp_cli import LLAMA_CPP, happy_pairs

from steerlab.extraction import extract
from steerlab.formats import export_gguf
from steerlab.models import alias_gguf
from steerlab.steering import steer

# The wheel holds no library (built with -DLLAMA_BUILD=OFF); llama_cpp reads this variable when it is imported. Set
# outright, not defaulted: the test must drive the very llama.cpp that the CLI test runs.
os.environ["LLAMA_CPP_LIB_PATH"] = str(LLAMA_CPP / "lib")
try:
    import llama_cpp
except (ImportError, OSError, RuntimeError) as exc:  # a clear failure, not a skip: `make test` installs it
    raise ImportError(
        f"tests/test_llamacpp.py needs llama-cpp-python and libllama.so in {LLAMA_CPP / 'lib'}: run `make llama-cpp`."
    ) from exc

PROMPT = "My friend called me this morning and told me that"
LAYERS = list(range(6, 15))
SCALE = 0.6


def cvec_buffer(path: Path, scale: float, n_embd: int, n_layer: int) -> np.ndarray:
    """The buffer llama.cpp's loader builds from a control-vector file: row il - 1 holds direction.il * scale."""
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == "controlvector"
    data = np.zeros((n_layer - 1, n_embd), dtype=np.float32)
    for tensor in reader.tensors:
        layer = int(tensor.name.split(".")[1])
        assert layer >= 1 and tensor.tensor_type == gguf.GGMLQuantizationType.F32
        if layer < n_layer:
            data[layer - 1] += scale * np.asarray(tensor.data, dtype=np.float32)
    return data


class LlamaCpp:
    """The default model's GGUF in llama.cpp, one thread, a fresh context per evaluation (no cache to clear)."""

    def __init__(self, gguf_path: Path) -> None:
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(str(gguf_path).encode(), params)
        assert self.model, f"llama.cpp could not load {gguf_path}"
        self.n_embd = llama_cpp.llama_model_n_embd(self.model)
        self.n_layer = llama_cpp.llama_model_n_layer(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))

    def last_logits(self, tokens: list[int], cvec: np.ndarray | None) -> np.ndarray:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch = 128, 128
        params.n_threads = params.n_threads_batch = 1
        ctx = llama_cpp.llama_init_from_model(self.model, params)
        assert ctx
        try:
            if cvec is not None:
                flat = np.ascontiguousarray(cvec.reshape(-1))
                pointer = flat.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
                rc = llama_cpp.llama_set_adapter_cvec(ctx, pointer, flat.size, self.n_embd, 1, self.n_layer - 1)
                assert rc == 0, f"llama_set_adapter_cvec returned {rc}"
            array = (llama_cpp.llama_token * len(tokens))(*tokens)
            assert llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(array, len(tokens))) == 0
            logits = llama_cpp.llama_get_logits_ith(ctx, -1)
            return np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).astype(np.float64).copy()
        finally:
            llama_cpp.llama_free(ctx)

    def close(self) -> None:
        llama_cpp.llama_model_free(self.model)


def hf_last_logits(model, tokens: list[int]) -> np.ndarray:
    with torch.no_grad():
        out = model.hf_model(input_ids=torch.tensor([tokens]), use_cache=False).logits
    return out[0, -1].double().numpy()


@pytest.mark.slow
def test_llamacpp_reads_the_exported_gguf_and_steers_like_the_hooks(default_model, datasets, tmp_path) -> None:
    vector = extract(default_model, happy_pairs(datasets), layers=LAYERS, progress=False, name="happy")
    path = export_gguf(vector, tmp_path / "happy.gguf")
    tokens = list(default_model.tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    engine = LlamaCpp(alias_gguf("smollm2-135m"))
    try:
        assert (engine.n_embd, engine.n_layer) == (default_model.hidden_size, default_model.n_layers)
        plain = engine.last_logits(tokens, None)
        zero = engine.last_logits(tokens, cvec_buffer(path, 0.0, engine.n_embd, engine.n_layer))
        steered = engine.last_logits(tokens, cvec_buffer(path, SCALE, engine.n_embd, engine.n_layer))
        wrong_block = cvec_buffer(path, SCALE, engine.n_embd, engine.n_layer)
        wrong_block = np.roll(wrong_block, 6, axis=0)  # the same rows six blocks later: a different steering
        shifted = engine.last_logits(tokens, wrong_block)
    finally:
        engine.close()
    np.testing.assert_allclose(zero, plain, atol=1e-4)  # scale 0 is the unsteered model
    hf_plain = hf_last_logits(default_model, tokens)
    with steer(default_model, vector, scale=SCALE, layers=vector.layers):  # every exported block
        hf_steered = hf_last_logits(default_model, tokens)
    assert np.corrcoef(plain, hf_plain)[0, 1] > 0.98  # the two engines run the same model
    cpp_shift, hf_shift = steered - plain, hf_steered - hf_plain
    assert np.abs(cpp_shift).max() > 1.0, "the control vector did not move llama.cpp's logits"
    correlation = np.corrcoef(cpp_shift, hf_shift)[0, 1]
    assert correlation > 0.9, f"llama.cpp and the HF hooks move the logits differently (r={correlation:.3f})"
    assert np.corrcoef(shifted - plain, hf_shift)[0, 1] < correlation
    # The shift has the size the hooks give, not just the direction.
    assert 0.7 < np.linalg.norm(cpp_shift) / np.linalg.norm(hf_shift) < 1.4
