"""Forward passes shared by the unlearning measurements: base model or a given adapter."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from hypernet.functional import functional_forward

__all__ = ["logits_of", "eval_mode"]


def logits_of(
    peft_model: nn.Module, adapter: Mapping[str, torch.Tensor] | None, input_ids: torch.Tensor
) -> torch.Tensor:
    """Logits ``(b, t, vocab)`` of the base model (``adapter=None``, via ``disable_adapter()``)
    or of the model running functionally with ``adapter`` (the model's own LoRA weights untouched)."""
    if adapter is None:
        with peft_model.disable_adapter():
            return peft_model(input_ids=input_ids).logits
    return functional_forward(peft_model, adapter, input_ids=input_ids).logits


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run in ``eval()`` mode and restore the caller's train/eval mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
