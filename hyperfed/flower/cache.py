"""Per-process caches of what every node rebuilds deterministically: corpus and base model.

In the Simulation Engine a ClientApp process (a Ray actor) serves many messages, and the
in-process grid serves every node from one process, so building the corpus (~2.5 s) and
loading the base model once per process matters. Both are pure functions of frozen config
dataclasses, which makes them safe cache keys.
"""

from __future__ import annotations

import functools
import logging

from torch import nn

from hyperfed.base_model import BaseModelConfig, load_or_build_base_model
from hyperfed.data.corpus import CorpusConfig, FederatedCorpus, build_corpus
from hypernet.base_models import add_lora

__all__ = ["cached_corpus", "cached_client_model", "load_base_model", "build_peft_model"]

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def cached_corpus(config: CorpusConfig) -> FederatedCorpus:
    """The corpus for ``config``, built once per process."""
    log.info("building the corpus for %s", config)
    return build_corpus(config)


def load_base_model(base: BaseModelConfig) -> nn.Module:
    """The cached base model for ``base`` (pretrained on first use).

    Its cache key hashes the pretraining text, which :func:`load_or_build_base_model` reads
    directly (cached per process) — no corpus is built for it.
    """
    return load_or_build_base_model(base)


def build_peft_model(base: BaseModelConfig, lora_rank: int) -> nn.Module:
    """A fresh peft-wrapped base model (LoRA on the family's default targets, seed 0).

    Every node and the server build the same LoRA layout, so adapter keys and shapes agree
    everywhere.
    """
    return add_lora(load_base_model(base), rank=lora_rank)


@functools.lru_cache(maxsize=2)
def cached_client_model(base: BaseModelConfig, lora_rank: int) -> nn.Module:
    """The peft model a ClientApp process trains on (one per process; every local round
    first copies the received adapter into it, so sharing it between clients is safe)."""
    return build_peft_model(base, lora_rank)
