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

__all__ = ["ADAPTER_DTYPES", "validate_adapter", "update_norm", "pfedhn_backward"]

Adapter = Mapping[str, torch.Tensor]

#: The dtypes an adapter may have: the floating ones the server computes in. Everything
#: else (float8, integers, bool, complex, quantized) is refused rather than converted.
ADAPTER_DTYPES: frozenset[torch.dtype] = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})


def _norm(values: torch.Tensor) -> float:
    """L2 norm of a float64 tensor that cannot overflow: scaled by its largest magnitude
    before squaring (inf or NaN only when a value is inf or NaN)."""
    if values.numel() == 0:
        return 0.0
    scale = float(values.abs().max())
    if scale == 0.0 or not math.isfinite(scale):
        return scale
    return scale * float(torch.linalg.vector_norm(values / scale))


def update_norm(sent: Adapter, returned: Adapter) -> float:
    """L2 norm of ``returned − sent`` over all keys, in float64 on the CPU, overflow-free.

    A finite update of any size gives a finite norm (or ``inf`` when the true norm exceeds
    the float64 range); compare it as ``not norm <= bound`` so a NaN never passes.
    """
    per_key = [
        _norm(value.detach().to("cpu", torch.float64) - sent[key].detach().to("cpu", torch.float64))
        for key, value in returned.items()
    ]
    return _norm(torch.tensor(per_key, dtype=torch.float64))


def _kind(value: object) -> str:
    return type(value).__name__


def _checked_tensor(key: str, value: object, shape: tuple[int, ...]) -> torch.Tensor:
    """``value`` if it is a dense floating tensor of ``shape`` the server can read, else raise."""
    if not isinstance(value, torch.Tensor):
        raise MalformedUpdateError(f"{key}: expected a torch.Tensor, got {_kind(value)}")
    if value.is_nested or value.layout != torch.strided:
        raise MalformedUpdateError(f"{key}: layout {value.layout} (nested={value.is_nested}) is not a dense tensor")
    if value.is_quantized:
        raise MalformedUpdateError(f"{key}: a quantized tensor ({value.dtype}) is not an adapter")
    if value.device.type == "meta":
        raise MalformedUpdateError(f"{key}: a meta tensor has no values")
    if value.dtype not in ADAPTER_DTYPES:
        allowed = ", ".join(sorted(str(d).removeprefix("torch.") for d in ADAPTER_DTYPES))
        raise MalformedUpdateError(f"{key}: dtype {value.dtype} is not one the server computes in ({allowed})")
    if tuple(value.shape) != shape:
        raise MalformedUpdateError(f"{key}: shape {tuple(value.shape)} != expected {shape}")
    return value


def validate_adapter(
    spec: TargetSpec,
    returned: object,
    sent: Adapter | None = None,
    max_update_norm: float | None = None,
) -> dict[str, torch.Tensor]:
    """The adapter the server may learn from, or :class:`MalformedUpdateError` saying why not.

    Checks, in order, so no check runs on something it cannot handle:

    1. ``returned`` is a :class:`~collections.abc.Mapping` with ``str`` keys, exactly the
       spec's keys;
    2. each value is a :class:`torch.Tensor`: dense (strided, not nested, not sparse), not
       quantized, not on the meta device, of a dtype in :data:`ADAPTER_DTYPES`, of the
       spec's shape;
    3. each value is copied to the device and dtype of ``sent[key]`` (without ``sent``: to
       the CPU, dtype kept) and the *copy* is finite (a float64 ``1e300`` is ``inf`` in
       float32, so finiteness is judged on what the server will compute with);
    4. with ``sent`` and ``max_update_norm``: ``‖copy − sent‖₂ ≤ max_update_norm``
       (:func:`update_norm`: float64, overflow-free; NaN never passes).

    Returns
    -------
    dict
        New detached tensors in the spec's key order; learn from these, never from the
        caller's objects.
    """
    if not isinstance(returned, Mapping):
        raise MalformedUpdateError(f"the adapter must be a mapping of peft key → tensor, got {_kind(returned)}")
    expected = spec.state_dict_shapes()
    given = list(returned)
    not_str = [k for k in given if not isinstance(k, str)]
    if not_str:
        raise MalformedUpdateError(f"adapter keys must be str, got {len(not_str)} of type {_kind(not_str[0])}")
    if set(given) != set(expected):
        missing, extra = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
        raise MalformedUpdateError(f"wrong keys: missing {missing[:3]}, unexpected {[k[:80] for k in extra[:3]]}")
    clean: dict[str, torch.Tensor] = {}
    for key, shape in expected.items():
        value = _checked_tensor(key, returned[key], shape)
        device, dtype = (sent[key].device, sent[key].dtype) if sent is not None else (torch.device("cpu"), value.dtype)
        try:
            copy = value.detach().to(device=device, dtype=dtype, copy=True).contiguous()
        except (RuntimeError, NotImplementedError) as exc:
            raise MalformedUpdateError(f"{key}: cannot be copied to {device} ({exc})") from None
        if not bool(torch.isfinite(copy).all()):
            raise MalformedUpdateError(f"{key}: contains NaN or inf (as {copy.dtype})")
        clean[key] = copy
    if sent is not None and max_update_norm is not None:
        norm = update_norm(sent, clean)
        if not norm <= max_update_norm:
            raise MalformedUpdateError(f"update norm {norm:.3g} exceeds the bound {max_update_norm:.3g}")
    return clean


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
