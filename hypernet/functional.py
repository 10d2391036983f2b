"""Run a peft model with a generated adapter while keeping autograd into the hypernetwork.

``peft.set_peft_model_state_dict`` *copies* values into the model and so breaks the graph;
that is right for clients, which train their adapter as ordinary parameters, and wrong for
end-to-end hypernetwork training. ``torch.func.functional_call`` swaps the LoRA parameters
for the generated tensors for one call instead, so ``loss.backward()`` reaches the
hypernetwork's trunk, heads and the used client's embedding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from hypernet.errors import CheckpointMismatchError

__all__ = ["parameter_names", "functional_forward", "causal_lm_loss"]


def parameter_names(adapter_keys: Mapping[str, Any] | list[str], adapter_name: str = "default") -> dict[str, str]:
    """Map peft state-dict keys (``...lora_A.weight``) to module parameter names
    (``...lora_A.<adapter_name>.weight``)."""
    names = {}
    for key in adapter_keys:
        stem, sep, tail = key.rpartition(".lora_")
        if not sep or tail not in ("A.weight", "B.weight"):
            raise CheckpointMismatchError(f"{key!r} is not a LoRA A/B weight key in peft's format")
        names[key] = f"{stem}.lora_{tail[0]}.{adapter_name}.weight"
    return names


def functional_forward(
    peft_model: nn.Module,
    adapter: Mapping[str, torch.Tensor],
    adapter_name: str = "default",
    **model_inputs: Any,
) -> Any:
    """Call ``peft_model(**model_inputs)`` with its LoRA weights replaced by ``adapter``.

    Raises
    ------
    CheckpointMismatchError
        If a key is not a parameter of the model or a shape differs.
    """
    params = dict(peft_model.named_parameters())
    swapped: dict[str, torch.Tensor] = {}
    for key, name in parameter_names(adapter, adapter_name).items():
        current = params.get(name)
        if current is None:
            raise CheckpointMismatchError(f"the model has no parameter {name} for adapter key {key}")
        tensor = adapter[key]
        if tensor.shape != current.shape:
            raise CheckpointMismatchError(
                f"{key}: generated shape {tuple(tensor.shape)} != model shape {tuple(current.shape)}"
            )
        swapped[name] = tensor.to(dtype=current.dtype, device=current.device)
    return functional_call(peft_model, swapped, args=(), kwargs=model_inputs, strict=False)


def causal_lm_loss(
    peft_model: nn.Module,
    adapter: Mapping[str, torch.Tensor] | None,
    input_ids: torch.Tensor,
    adapter_name: str = "default",
) -> torch.Tensor:
    """Mean next-token cross-entropy (nats/token) of ``input_ids`` ``(batch, seq)``.

    ``adapter=None`` uses whatever LoRA weights the model holds.
    """
    if adapter is None:
        output = peft_model(input_ids=input_ids, labels=input_ids)
    else:
        output = functional_forward(peft_model, adapter, adapter_name, input_ids=input_ids, labels=input_ids)
    loss: torch.Tensor = output.loss
    return loss
