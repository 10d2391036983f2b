"""Every configuration of the hypernet package, each validated when it is built.

* :class:`HyperLoRAConfig` — sizes and initialisation of the HyperLoRA generator;
* :class:`TrainerConfig` — optimisation of the hypernetwork (:class:`~hypernet.HypernetTrainer`);
* :class:`LocalTrainConfig` — a client's plain LoRA fine-tuning
  (:func:`~hypernet.train_local_adapter`).

A bad field raises :class:`~hypernet.errors.ConfigError` naming the class, the field and the
value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from typing import Any

from hypernet.errors import ConfigError

__all__ = ["HyperLoRAConfig", "TrainerConfig", "LocalTrainConfig", "OPTIMIZERS"]

OPTIMIZERS = ("adam", "sgd")


def _fail(obj: object, name: str, requirement: str) -> ConfigError:
    return ConfigError(f"{type(obj).__name__}.{name} must be {requirement}, got {getattr(obj, name)!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _require_positive(obj: object, *names: str) -> None:
    """Each field is an int > 0."""
    for name in names:
        value = getattr(obj, name)
        if not _is_int(value) or value <= 0:
            raise _fail(obj, name, "a positive int")


def _require_int(obj: object, *names: str, minimum: int | None = None) -> None:
    for name in names:
        value = getattr(obj, name)
        if not _is_int(value) or (minimum is not None and value < minimum):
            raise _fail(obj, name, "an int" if minimum is None else f"an int >= {minimum}")


def _require_float(obj: object, *names: str, positive: bool, optional: bool = False) -> None:
    """Each field is a real number > 0 (``positive``) or >= 0; ``optional`` also allows None."""
    for name in names:
        value = getattr(obj, name)
        if optional and value is None:
            continue
        if not _is_number(value) or not (value > 0 if positive else value >= 0):
            requirement = "a float > 0" if positive else "a float >= 0"
            raise _fail(obj, name, requirement + (" or None" if optional else ""))


def _require_choice(obj: object, name: str, choices: tuple[str, ...]) -> None:
    if getattr(obj, name) not in choices:
        raise _fail(obj, name, "one of " + ", ".join(repr(c) for c in choices))


@dataclass(frozen=True)
class HyperLoRAConfig:
    """Sizes and initialisation of the hypernetwork.

    Attributes
    ----------
    client_dim:
        Size of each client's learned embedding.
    layer_dim, type_dim:
        Sizes of the layer-depth and module-type embeddings.
    hidden_dim, trunk_depth:
        Width and number of hidden layers of the shared trunk MLP.
    chunk_size:
        If set, each head emits ``chunk_size`` numbers per call and a learned chunk
        embedding selects which slice of the adapter is produced (hypnettorch's chunked
        hypernetwork); keeps heads small for wide models. ``None``: one head output per target.
    chunk_dim:
        Size of the chunk embedding (only with ``chunk_size``).
    client_init_std:
        Std of a new client's embedding, drawn from a generator seeded by
        ``(seed, client_id)`` so an id maps to the same embedding in every run.
    head_init_std:
        Std of the A-part of each head's weights. The B-part and the trunk's influence on B
        start at exactly zero (bias-HyperInit), so every generated adapter starts at ΔW = 0.
    seed:
        Seed for the shared weights and for client embeddings.
    client_residual:
        Give every client its own *residual adapter*: a client-owned tensor (one flat
        vector per client, zero at registration, so ΔW is still 0) added to the generated
        adapter. It is client state like the embedding: removed with the client, outside the
        shared weights, trained by the trainer's own residual step.
    """

    client_dim: int = 32
    layer_dim: int = 16
    type_dim: int = 16
    hidden_dim: int = 128
    trunk_depth: int = 2
    chunk_size: int | None = None
    chunk_dim: int = 16
    client_init_std: float = 0.1
    head_init_std: float = 1e-3
    seed: int = 0
    client_residual: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.client_residual, bool):
            raise _fail(self, "client_residual", "a bool")
        _require_positive(self, "client_dim", "layer_dim", "type_dim", "hidden_dim", "trunk_depth")
        _require_positive(self, "chunk_dim")
        if self.chunk_size is not None:
            _require_positive(self, "chunk_size")
        _require_float(self, "client_init_std", "head_init_std", positive=False)
        _require_int(self, "seed")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HyperLoRAConfig:
        """Build from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown HyperLoRAConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class TrainerConfig:
    """Optimisation of the hypernetwork.

    Attributes
    ----------
    lr: learning rate of the shared weights (Adam 1e-3 worked end to end; 3e-3 diverged).
    embedding_lr: learning rate of client embeddings (default: ``lr``).
    optimizer: ``"adam"`` or ``"sgd"`` (pFedHN used SGD 1e-2, momentum 0.9).
    momentum: SGD momentum.
    base_lr: if set, the per-target *base adapters* get their own plain SGD step with this
        learning rate instead of joining the shared optimizer. With ``base_lr=1`` and the
        pFedHN rule, the base moves by the clients' mean update — exactly a FedAvg step — and
        the rest of the hypernetwork learns each client's deviation from it.
    residual_lr: learning rate of the plain SGD step of client-owned residual adapters
        (generators built with ``client_residual``). The pFedHN gradient of a residual is
        the client's own ``θ − θ̃`` (not weighted by the other clients), so ``1.0`` makes the
        residual absorb the client's local update exactly, as in local training.
    grad_clip: max global grad norm of the shared weights per step (``None``: off).
    batch_size: blocks per client per end-to-end step.
    clients_per_step: clients sampled per end-to-end step.
    seed: seeds client and batch sampling.
    """

    lr: float = 1e-3
    embedding_lr: float | None = None
    optimizer: str = "adam"
    momentum: float = 0.9
    base_lr: float | None = None
    residual_lr: float = 1.0
    grad_clip: float | None = 50.0
    batch_size: int = 8
    clients_per_step: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        _require_choice(self, "optimizer", OPTIMIZERS)
        _require_float(self, "lr", positive=True)
        _require_positive(self, "batch_size", "clients_per_step")
        _require_float(self, "embedding_lr", "base_lr", "grad_clip", positive=True, optional=True)
        _require_float(self, "momentum", "residual_lr", positive=False)
        _require_int(self, "seed")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LocalTrainConfig:
    """Local fine-tuning of one LoRA adapter (what a federated client runs).

    Attributes
    ----------
    steps: optimizer steps per call (0: the adapter comes back unchanged).
    lr: learning rate.
    batch_size: blocks per step.
    optimizer: ``"adam"`` or ``"sgd"``.
    seed: seeds batch sampling, so a client's local run is reproducible.
    """

    steps: int = 10
    lr: float = 3e-3
    batch_size: int = 8
    optimizer: str = "adam"
    seed: int = 0

    def __post_init__(self) -> None:
        _require_int(self, "steps", minimum=0)
        _require_positive(self, "batch_size")
        _require_float(self, "lr", positive=True)
        _require_choice(self, "optimizer", OPTIMIZERS)
        _require_int(self, "seed")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
