"""Client-side logic, free of any Flower type: train the received adapter, evaluate it."""

from __future__ import annotations

import hashlib

from torch import nn

from hyperfed.federation.config import FederationConfig
from hyperfed.federation.servers import Adapter, Reply
from hypernet import ClientData, LocalTrainConfig, evaluate_loss, train_local_adapter

__all__ = ["local_round", "evaluate_client", "local_seed"]


def local_seed(seed: int, round_: int, client_id: str) -> int:
    """Seed of a client's batch sampling in a round: a function of (seed, round, id) only."""
    digest = hashlib.sha256(f"hyperfed-local\x00{seed}\x00{round_}\x00{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def local_round(
    peft_model: nn.Module,
    adapter: Adapter,
    data: ClientData,
    config: FederationConfig,
    round_: int,
    client_id: str,
) -> Reply:
    """Fine-tune ``adapter`` for ``config.local_steps`` steps on the client's train blocks."""
    local = LocalTrainConfig(
        steps=config.local_steps,
        lr=config.local_lr,
        batch_size=config.batch_size,
        optimizer=config.local_optimizer,
        seed=local_seed(config.seed, round_, client_id),
    )
    trained, loss = train_local_adapter(peft_model, adapter, data.train, local)
    return Reply(adapter=trained, num_examples=int(data.train.shape[0]), train_loss=loss)


def evaluate_client(peft_model: nn.Module, adapter: Adapter, data: ClientData) -> float:
    """Mean validation loss (nats/byte) of ``adapter`` on the client's held-out blocks."""
    return evaluate_loss(peft_model, adapter, data.val)
