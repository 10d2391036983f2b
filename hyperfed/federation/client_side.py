"""Client-side logic, free of any Flower type: train the received adapter, evaluate it."""

from __future__ import annotations

from torch import nn

from hyperfed.federation.config import FederationConfig
from hyperfed.federation.servers import Adapter, Reply
from hypernet import ClientData, evaluate_loss, train_local_adapter

__all__ = ["local_round", "evaluate_client"]


def local_round(
    peft_model: nn.Module,
    adapter: Adapter,
    data: ClientData,
    config: FederationConfig,
    round_: int,
    client_id: str,
) -> Reply:
    """Fine-tune ``adapter`` for ``config.local.steps`` steps on the client's train blocks."""
    trained, loss = train_local_adapter(peft_model, adapter, data.train, config.local_config(round_, client_id))
    return Reply(adapter=trained, num_examples=int(data.train.shape[0]), train_loss=loss)


def evaluate_client(peft_model: nn.Module, adapter: Adapter, data: ClientData) -> float:
    """Mean validation loss (nats/byte) of ``adapter`` on the client's held-out blocks."""
    return evaluate_loss(peft_model, adapter, data.val)
