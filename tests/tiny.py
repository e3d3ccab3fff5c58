"""Tiny random decoders of every supported architecture, built from configs (no download)."""

from __future__ import annotations

from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from transformers import models as hf

from steerlab.models import LoadedModel, wrap_model
from steerlab.pairs import PairSet

H, L, V = 32, 4, 96
COMMON: dict[str, Any] = {
    "vocab_size": V,
    "hidden_size": H,
    "num_hidden_layers": L,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 128,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "pad_token_id": 0,
}
# DeepSeek V2 and V3 take the same MLA + MoE settings; MLA needs as many KV heads as query heads here.
DEEPSEEK: dict[str, Any] = {
    **COMMON,
    "num_key_value_heads": 4,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 16,
    "n_shared_experts": 1,
    "first_k_dense_replace": 1,
    "kv_lora_rank": 16,
    "q_lora_rank": None,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 8,
    "n_group": 1,
    "topk_group": 1,
}
MOE: dict[str, Any] = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 16}


def _configs() -> dict[str, Any]:
    return {
        "llama": hf.llama.LlamaConfig(**COMMON),
        "mistral": hf.mistral.MistralConfig(**COMMON),
        "qwen2": hf.qwen2.Qwen2Config(**COMMON),
        "qwen3": hf.qwen3.Qwen3Config(**COMMON, head_dim=8),
        "gemma2": hf.gemma2.Gemma2Config(**COMMON, head_dim=8),
        "gemma3": hf.gemma3.Gemma3TextConfig(**COMMON, head_dim=8),
        "phi3": hf.phi3.Phi3Config(**COMMON),
        "gpt2": hf.gpt2.GPT2Config(
            vocab_size=V, n_embd=H, n_layer=L, n_head=4, n_positions=128, bos_token_id=0, eos_token_id=0, pad_token_id=0
        ),
        "gpt_neox": hf.gpt_neox.GPTNeoXConfig(
            vocab_size=V,
            hidden_size=H,
            num_hidden_layers=L,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=128,
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
        ),
        "deepseek_v2": hf.deepseek_v2.DeepseekV2Config(**DEEPSEEK),
        "deepseek_v3": hf.deepseek_v3.DeepseekV3Config(**DEEPSEEK),
        "qwen3_moe": hf.qwen3_moe.Qwen3MoeConfig(**COMMON, **MOE, head_dim=8, decoder_sparse_step=1),
        "mixtral": hf.mixtral.MixtralConfig(**COMMON, num_local_experts=4, num_experts_per_tok=2),
    }


ARCHS = tuple(_configs())
MOE_ARCHS = ("deepseek_v2", "deepseek_v3", "qwen3_moe", "mixtral")

# Every transformers MoE family with a top-k router that builds from a small config (expert steering's tests).
# Settings a family does not know are ignored by its config.
MOE_SETTINGS: dict[str, Any] = {
    **MOE,
    "num_local_experts": 4,
    "head_dim": 8,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "first_k_dense_replace": 0,
    "moe_layer_freq": 1,
    "n_group": 1,
    "topk_group": 1,
}
MOE_FAMILIES = (
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "qwen3_next",
    "deepseek_v2",
    "deepseek_v3",
    "olmoe",
    "flex_olmo",
    "gpt_oss",
    "granitemoe",
    "granitemoeshared",
    "phimoe",
    "glm4_moe",
    "ernie4_5_moe",
    "hunyuan_v1_moe",
    "llama4_text",
    "minimax",
    "exaone_moe",
)


def tiny_moe(family: str, seed: int = 0, **overrides: Any) -> LoadedModel:
    """A tiny random MoE of one family: 4 layers, 4 experts, top-2 unless `overrides` say otherwise (DeepSeek takes
    its MLA settings from `DEEPSEEK`)."""
    from transformers import AutoConfig

    torch.manual_seed(seed)
    if family in ("deepseek_v2", "deepseek_v3"):
        config = AutoConfig.for_model(family, **{**DEEPSEEK, **overrides})
    else:
        config = AutoConfig.for_model(family, **{**COMMON, **MOE_SETTINGS, **overrides})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return wrap_model(model, byte_tokenizer(), name=f"tiny-{family}")


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII, enough to run every text path of the library."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    chars = [chr(c) for c in range(32, 127)]
    vocab = {"<pad>": 0, **{ch: i + 1 for i, ch in enumerate(chars[: V - 1])}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    from tokenizers import decoders

    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<pad>")


def tiny_model(arch: str = "llama", seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    config = _configs()[arch]
    config.pad_token_id = 0
    config.eos_token_id = 0
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return wrap_model(model, byte_tokenizer(), name=f"tiny-{arch}")


# ChatML, as SmolLM2 and Qwen write it: the template brings its own turn tokens, <|im_end|> closes every turn.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_tiny_model(arch: str = "llama", seed: int = 0) -> LoadedModel:
    """A tiny model whose tokenizer has a chat template and two added turn tokens (the embeddings grow to fit)."""
    model = tiny_model(arch, seed)
    tok = model.tokenizer
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML
    model.hf_model.resize_token_embeddings(len(tok), mean_resizing=False)
    return model


# Preference training on the tiny models: few steps, no progress bar (shared by the preference and bench tests).
FAST_PREFERENCE = {"epochs": 2, "pairs_per_step": 4, "eval_every": 2, "progress": False}


def preference_pairs(n: int, flip: bool = False, start: int = 0) -> PairSet:
    """Pairs a tiny model can learn: numbered prompts, a varied positive, one fixed negative (`flip` swaps them)."""
    rows = [{"prompt": f"Q{i}: answer", "positive": f"yes {i % 3}", "negative": "no!"} for i in range(start, start + n)]
    if flip:
        rows = [{**r, "positive": r["negative"], "negative": r["positive"]} for r in rows]
    return PairSet.from_records(rows)
