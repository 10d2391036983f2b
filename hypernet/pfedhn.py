"""The pFedHN server update, as pure functions a Flower strategy can call.

The server generated ``θᵢ = h(vᵢ; φ)`` and sent it; client *i* returned ``θ̃ᵢ`` after local
steps. ``θᵢ − θ̃ᵢ`` is the client's accumulated descent direction, so the chain rule gives
the hypernetwork's pseudo-gradient with one vector-Jacobian product::

    torch.autograd.backward(θᵢ, grad_tensors=θᵢ − θ̃ᵢ)

(Shamsian et al., 2021). Gradients of several clients are averaged; only the embeddings of
the clients in ``returned`` receive a gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from hypernet.errors import MalformedUpdateError, UnknownClientError
from hypernet.generators import Generator
from hypernet.targets import TargetSpec

__all__ = ["validate_adapter", "update_norm", "pfedhn_backward"]

Adapter = Mapping[str, torch.Tensor]


def update_norm(sent: Adapter, returned: Adapter) -> float:
    """L2 norm of ``returned − sent`` over all keys."""
    total = 0.0
    for key, value in returned.items():
        total += float(((value.double().cpu() - sent[key].double().cpu()) ** 2).sum())
    return math.sqrt(total)


def validate_adapter(
    spec: TargetSpec,
    returned: Adapter,
    sent: Adapter | None = None,
    max_update_norm: float | None = None,
) -> None:
    """Raise :class:`MalformedUpdateError` unless ``returned`` is a well-formed adapter.

    Checks, in order: exactly the spec's keys; each shape; floating dtype; all values
    finite; and, with ``sent`` and ``max_update_norm``, ``‖returned − sent‖₂ ≤ max_update_norm``.
    """
    expected = spec.state_dict_shapes()
    if set(returned) != set(expected):
        missing, extra = sorted(set(expected) - set(returned)), sorted(set(returned) - set(expected))
        raise MalformedUpdateError(f"wrong keys: missing {missing[:3]}, unexpected {extra[:3]}")
    for key, shape in expected.items():
        value = returned[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            raise MalformedUpdateError(f"{key}: shape {tuple(getattr(value, 'shape', ()))} != expected {shape}")
        if not value.is_floating_point():
            raise MalformedUpdateError(f"{key}: dtype {value.dtype} is not floating point")
        if not bool(torch.isfinite(value).all()):
            raise MalformedUpdateError(f"{key}: contains NaN or inf")
    if sent is not None and max_update_norm is not None:
        norm = update_norm(sent, returned)
        if norm > max_update_norm:
            raise MalformedUpdateError(f"update norm {norm:.3g} exceeds the bound {max_update_norm:.3g}")


def pfedhn_backward(
    hypernet: Generator,
    returned: Mapping[str, Adapter],
    sent: Mapping[str, Adapter] | None = None,
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Accumulate the pFedHN pseudo-gradient of every client in ``returned`` into ``.grad``.

    Parameters
    ----------
    returned:
        ``client_id → θ̃ᵢ`` (validate with :func:`validate_adapter` first).
    sent:
        ``client_id → θᵢ`` as sent; the direction used is ``sent − returned``. If omitted,
        ``θᵢ`` is regenerated from the current weights (equal to what was sent as long as
        the hypernetwork did not step in between).
    weights:
        Per-client weights (e.g. number of examples), normalised to sum to 1; default uniform.

    Returns
    -------
    dict
        ``client_id → ‖θᵢ − θ̃ᵢ‖₂``, for logging.
    """
    ids = list(returned)
    if not ids:
        return {}
    for cid in ids:
        if not hypernet.has_client(cid):
            raise UnknownClientError(f"update from unknown client {cid!r}")
    raw = {cid: float(weights[cid]) if weights else 1.0 for cid in ids}
    total = sum(raw.values())
    if not total > 0:
        raise MalformedUpdateError(f"client weights must sum to > 0, got {raw}")
    generated = hypernet.generate_batch(ids)  # key → (b, ...), keeps autograd
    outputs: list[torch.Tensor] = []
    grads: list[torch.Tensor] = []
    norms = {cid: 0.0 for cid in ids}
    for key, theta in generated.items():
        directions: list[torch.Tensor] = []
        for n, cid in enumerate(ids):
            reference = sent[cid][key] if sent is not None else theta[n].detach()
            delta = reference.to(theta) - returned[cid][key].to(theta)  # θᵢ − θ̃ᵢ
            norms[cid] += float((delta.double() ** 2).sum())
            directions.append(delta * (raw[cid] / total))
        outputs.append(theta)
        grads.append(torch.stack(directions))
    torch.autograd.backward(outputs, grad_tensors=grads)
    return {cid: math.sqrt(v) for cid, v in norms.items()}
