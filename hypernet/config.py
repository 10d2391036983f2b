"""Configuration of the HyperLoRA generator."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from hypernet.errors import ConfigError

__all__ = ["HyperLoRAConfig"]


def _require_positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{type(obj).__name__}.{name} must be a positive int, got {value!r}")


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

    def __post_init__(self) -> None:
        _require_positive(self, "client_dim", "layer_dim", "type_dim", "hidden_dim", "trunk_depth")
        _require_positive(self, "chunk_dim")
        if self.chunk_size is not None:
            _require_positive(self, "chunk_size")
        for name in ("client_init_std", "head_init_std"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"HyperLoRAConfig.{name} must be a float >= 0, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HyperLoRAConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown HyperLoRAConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)
