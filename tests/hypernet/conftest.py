"""Tiny models and a small non-IID toy corpus for the hypernet tests."""

from __future__ import annotations

import pytest
import torch

from hypernet import ClientData
from hypernet.base_models import add_lora, tiny_gpt2, tiny_llama, tiny_qwen2

# (name, builder, LoRA target modules): one behaviour runs across every architecture.
ARCHITECTURES = [
    ("llama-gqa", tiny_llama, ["q_proj", "k_proj", "v_proj", "o_proj"]),
    ("gpt2-conv1d", tiny_gpt2, ["c_attn", "c_proj"]),
    ("qwen2", tiny_qwen2, "all-linear"),
]


@pytest.fixture(params=ARCHITECTURES, ids=[a[0] for a in ARCHITECTURES])
def arch_model(request):
    _, build, targets = request.param
    return add_lora(build(), rank=4, target_modules=targets)


@pytest.fixture
def llama_model():
    return add_lora(tiny_llama(), rank=4)


def cyclic_client(seed: int, n_blocks: int = 64, block: int = 32) -> ClientData:
    """Text that cycles through a client-specific 8-symbol alphabet: learnable, and
    different for every client (a truly non-IID split)."""
    g = torch.Generator().manual_seed(seed)
    alphabet = torch.randperm(256, generator=g)[:8]
    start = torch.randint(0, 8, (n_blocks,), generator=g)
    blocks = alphabet[(start[:, None] + torch.arange(block)) % 8]
    split = n_blocks * 3 // 4
    return ClientData(train=blocks[:split], val=blocks[split:])


@pytest.fixture
def toy_data():
    return {f"client-{i}": cyclic_client(i) for i in range(4)}
