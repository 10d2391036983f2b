"""Client training: plain peft LoRA training of one adapter on one client's data.

This is what a federated client runs on the adapter the server generated for it, and what
the FedAvg-LoRA and local-only baselines run. The adapter is *copied* into the model with
``set_peft_model_state_dict`` (no graph to the hypernetwork is needed here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn

from hypernet.config import LocalTrainConfig
from hypernet.data import sample_batch
from hypernet.errors import CheckpointMismatchError
from hypernet.functional import causal_lm_loss

__all__ = ["train_local_adapter", "evaluate_loss", "get_adapter", "set_adapter"]

Adapter = dict[str, torch.Tensor]


def _lora_state_dict(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    # LoRA on linear layers only, never on embeddings: peft need not look for the base
    # model's config.json (a GGUF folder has none, and offline it warns it cannot tell)
    state: dict[str, torch.Tensor] = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    return state


def get_adapter(peft_model: nn.Module) -> Adapter:
    """The model's current LoRA weights in peft's state-dict format (detached copies)."""
    return {k: v.detach().clone() for k, v in _lora_state_dict(peft_model).items()}


def set_adapter(peft_model: nn.Module, adapter: Mapping[str, torch.Tensor]) -> None:
    """Copy ``adapter`` into the model, refusing missing, extra or mis-shaped keys."""
    expected = _lora_state_dict(peft_model)
    if set(adapter) != set(expected):
        missing, extra = sorted(set(expected) - set(adapter)), sorted(set(adapter) - set(expected))
        raise CheckpointMismatchError(f"adapter keys differ from the model's: missing {missing[:3]}, extra {extra[:3]}")
    for key, value in adapter.items():
        if value.shape != expected[key].shape:
            raise CheckpointMismatchError(f"{key}: shape {tuple(value.shape)} != model's {tuple(expected[key].shape)}")
    set_peft_model_state_dict(peft_model, {k: v.detach() for k, v in adapter.items()})


def train_local_adapter(
    peft_model: nn.Module,
    adapter: Mapping[str, torch.Tensor],
    train_blocks: torch.Tensor,
    config: LocalTrainConfig | None = None,
) -> tuple[Adapter, float]:
    """Fine-tune ``adapter`` on ``train_blocks``; return the new adapter and the mean loss.

    Only LoRA weights are trained; the base model stays frozen. ``config`` defaults to
    :class:`~hypernet.config.LocalTrainConfig` ``()``.
    """
    config = config or LocalTrainConfig()
    set_adapter(peft_model, adapter)
    params = [p for n, p in peft_model.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    opt = (
        torch.optim.Adam(params, lr=config.lr) if config.optimizer == "adam" else torch.optim.SGD(params, lr=config.lr)
    )
    gen = torch.Generator().manual_seed(config.seed)
    device = params[0].device
    peft_model.train()
    losses: list[float] = []
    for _ in range(config.steps):
        batch = sample_batch(train_blocks, config.batch_size, gen).to(device)
        loss = causal_lm_loss(peft_model, None, batch)
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        opt.step()
        losses.append(loss.item())
    return get_adapter(peft_model), (sum(losses) / len(losses) if losses else float("nan"))


@torch.no_grad()
def evaluate_loss(
    peft_model: nn.Module,
    adapter: Mapping[str, torch.Tensor] | None,
    blocks: torch.Tensor,
    batch_size: int = 16,
) -> float:
    """Mean next-token loss over all ``blocks`` with ``adapter`` (``None``: the base model)."""
    peft_model.eval()
    peft: Any = peft_model  # for peft's untyped disable_adapter()
    device = next(peft_model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, blocks.shape[0], batch_size):
        batch = blocks[start : start + batch_size].to(device)
        if adapter is None:
            with peft.disable_adapter():
                loss = causal_lm_loss(peft_model, None, batch)
        else:
            loss = causal_lm_loss(peft_model, adapter, batch)
        total += loss.item() * batch.shape[0]
        count += batch.shape[0]
    return total / count
