"""A tiny corpus and model shared by the federation tests."""

from __future__ import annotations

import pytest

from hyperfed.data.corpus import CorpusConfig, build_corpus
from hypernet.base_models import add_lora, tiny_llama


@pytest.fixture(scope="session")
def tiny_corpus():
    return build_corpus(
        CorpusConfig(domains=("code", "docs"), clients_per_domain=2, train_kib=2, val_kib=1, block_size=64)
    )


@pytest.fixture
def tiny_peft():
    return add_lora(tiny_llama(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1), rank=2)
