"""The demo's base model: a small byte-level Llama pretrained on text no client owns.

Built once from a recipe (:class:`BaseModelConfig`) and cached under
``$HYPERFED_CACHE`` (default ``~/.cache/hyperfed``) in a folder named by the recipe's hash,
as a standard Hugging Face model folder (``config.json`` + ``model.safetensors``), so it
also loads with ``AutoModelForCausalLM.from_pretrained``. The default recipe takes about
a minute and a half on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from hyperfed.data.corpus import FederatedCorpus, pretrain_blocks, pretraining_text
from hyperfed.data.tokenizer import ByteTokenizer
from hyperfed.pretrained import load_pretrained, lora_layer_indices
from hypernet.atomic import atomic_directory
from hypernet.base_models import LORA_LAYERS_ATTR, load_causal_lm, tiny_llama
from hypernet.data import sample_batch
from hypernet.errors import ConfigError

__all__ = ["BaseModelConfig", "cache_dir", "load_or_build_base_model", "pretrain_base_model"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseModelConfig:
    """Architecture and pretraining recipe (every field is part of the cache key).

    ``name`` picks a real pretrained model instead (``smollm2-135m``, a local Hugging Face
    folder, or a hub id; see :mod:`hyperfed.pretrained`): then the architecture and recipe
    fields are unused, nothing is pretrained, and the model's own tokenizer tokenizes the
    corpus. ``lora_layers`` > 0 puts LoRA on the top that many transformer layers only
    (peft's ``layers_to_transform``; 0: every layer) — the budget knob for a real model.
    ``public_share`` in [0, 1): that share of each pretraining source, taken from its end,
    is kept out of the base model's pretraining — public text the base has not seen, for
    the hypernetwork's public pretraining (``corpus.public_share`` follows it in a
    :class:`~hyperfed.config.RunConfig`; :func:`~hyperfed.data.corpus.public_clients`).
    """

    name: str = ""
    lora_layers: int = 0
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    steps: int = 1500
    batch_size: int = 16
    block_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    public_share: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "batch_size", "block_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"BaseModelConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.lora_layers < 0:
            raise ConfigError(f"BaseModelConfig.lora_layers must be >= 0 (0: every layer), got {self.lora_layers}")
        if self.steps < 0 or not self.lr > 0:
            raise ConfigError(f"BaseModelConfig needs steps >= 0 and lr > 0, got {self}")
        if not 0.0 <= self.public_share < 1.0:
            raise ConfigError(f"BaseModelConfig.public_share must be in [0, 1), got {self.public_share!r}")

    def key(self, pretrain_text: str = "") -> str:
        """Short hash of the recipe and of the pretraining text: the cache folder name."""
        # name and lora_layers do not change what is pretrained, public_share changes the text
        # (hashed below): out of the key, so old caches stay valid
        fields = {k: v for k, v in asdict(self).items() if k not in ("name", "lora_layers", "public_share")}
        recipe = json.dumps(fields, sort_keys=True) + hashlib.sha256(pretrain_text.encode()).hexdigest()
        return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def cache_dir() -> Path:
    return Path(os.environ.get("HYPERFED_CACHE", Path.home() / ".cache" / "hyperfed"))


def pretrain_base_model(
    blocks: torch.Tensor,
    config: BaseModelConfig,
    callback: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Train a byte-level Llama from scratch on ``blocks`` (AdamW, one-cycle schedule)."""
    model = tiny_llama(
        vocab_size=ByteTokenizer.vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        num_kv_heads=config.num_kv_heads,
        seed=config.seed,
    )
    if config.steps == 0:
        return model.eval()
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.01)
    # One-cycle needs a warm-up of at least one step; very short (test) recipes keep lr flat.
    schedule = (
        torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.05)
        if config.steps >= 40
        else torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0)
    )
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    for step in range(config.steps):
        batch = sample_batch(blocks, config.batch_size, gen)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        if callback:
            callback(step + 1, loss.item())
        if (step + 1) % 250 == 0:
            log.info("pretraining step %d/%d: loss %.3f", step + 1, config.steps, loss.item())
    return model.eval()


def load_or_build_base_model(
    config: BaseModelConfig = BaseModelConfig(),
    corpus: FederatedCorpus | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """The cached base model for ``config``, pretraining it first if it is not cached.

    The pretraining text is the corpus's reserved text (by default every domain's, so the
    same base serves every client subset); its hash is part of the cache key, so a changed
    corpus never reuses a base model that may have seen client text. A named model
    (``config.name``) is loaded as it is, never pretrained here.
    """
    if config.name:
        model = load_pretrained(config.name)
    else:
        model = _byte_level_model(config, corpus, callback)
    layers = lora_layer_indices(model, config.lora_layers)
    if layers is not None:
        setattr(model.config, LORA_LAYERS_ATTR, layers)  # add_lora's default on every copy
    return model


def _byte_level_model(
    config: BaseModelConfig, corpus: FederatedCorpus | None, callback: Callable[[int, float], None] | None
) -> nn.Module:
    text = corpus.pretrain_text if corpus is not None else pretraining_text(public_share=config.public_share)
    folder = cache_dir() / f"base-llama-{config.key(text)}"
    if not (folder / "config.json").exists():
        log.info("pretraining the base model (%d steps) into %s", config.steps, folder)
        model = pretrain_base_model(pretrain_blocks(text, config.block_size), config, callback)
        atomic_directory(folder, lambda tmp: _save(model, config, tmp))
    model = load_causal_lm(str(folder))
    return model.eval()


def _save(model: nn.Module, config: BaseModelConfig, folder: Path) -> None:
    model.save_pretrained(str(folder))
    (folder / "hyperfed_recipe.json").write_text(json.dumps(asdict(config), indent=1))
