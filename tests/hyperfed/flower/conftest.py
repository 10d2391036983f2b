"""A tiny run config shared by the Flower tests (4 clients, 1-layer byte Llama)."""

from __future__ import annotations

import os

import pytest
import torch

#: Small enough for a round in well under a second; 4 clients from two domains.
TINY = {
    "corpus-domains": "code,docs",
    "corpus-clients-per-domain": 2,
    "corpus-train-kib": 2,
    "corpus-val-kib": 1,
    "corpus-block-size": 64,
    "base-model-steps": 50,
    "base-model-hidden-size": 32,
    "base-model-num-layers": 1,
    "lora-rank": 4,
    "rounds": 2,
    "local-steps": 3,
    "local-batch-size": 4,
    "evaluate-every": 1,
}


@pytest.fixture(scope="session", autouse=True)
def hyperfed_cache(tmp_path_factory):
    """A fresh model cache for the session (also seen by Flower's subprocesses)."""
    old = os.environ.get("HYPERFED_CACHE")
    os.environ["HYPERFED_CACHE"] = str(tmp_path_factory.mktemp("hyperfed-cache"))
    yield os.environ["HYPERFED_CACHE"]
    if old is None:
        os.environ.pop("HYPERFED_CACHE", None)
    else:
        os.environ["HYPERFED_CACHE"] = old


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny matmuls on 2 shared cores: extra intra-op threads only contend (20-40x slower)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tiny_run_config():
    return dict(TINY)


@pytest.fixture(scope="module")
def tiny_module_run_config():
    """:data:`TINY` for module-scoped fixtures (a run several tests read)."""
    return dict(TINY)
