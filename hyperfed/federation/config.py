"""One configuration for a federated run, readable from a Flower run config.

Flower run-config keys are kebab-case and read in exactly one place:
:meth:`FederationConfig.from_run_config`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from hypernet.errors import ConfigError

__all__ = ["FederationConfig", "METHODS"]

METHODS = ("hyperlora", "fedavg", "local")


@dataclass(frozen=True)
class FederationConfig:
    """Settings shared by HyperLoRA, FedAvg-LoRA and local-only runs (same budget for all).

    Attributes
    ----------
    method: ``"hyperlora"``, ``"fedavg"`` (one shared LoRA) or ``"local"`` (no sharing).
    rounds: federated rounds.
    sample_rate: each client's independent probability of taking part in a round.
    local_steps, local_lr, batch_size, local_optimizer: the client's LoRA fine-tuning per round.
    server_lr, server_optimizer, server_momentum: hypernetwork optimisation (pFedHN update).
    server_base_lr: SGD learning rate of the hypernetwork's base adapters; ``1.0`` moves them
        by the clients' mean update, like FedAvg (``None``: use the server optimizer).
    embedding_lr: client-embedding learning rate (default: ``server_lr``).
    max_update_norm: replies whose ‖θ̃ − θ‖₂ exceeds this are rejected.
    lora_rank: LoRA rank of the adapters.
    seed: seeds sampling, client training and the hypernetwork.
    """

    method: str = "hyperlora"
    rounds: int = 15
    sample_rate: float = 1.0
    local_steps: int = 10
    local_lr: float = 3e-3
    batch_size: int = 8
    local_optimizer: str = "adam"
    server_lr: float = 3e-3
    server_optimizer: str = "adam"
    server_momentum: float = 0.0
    server_base_lr: float | None = 1.0
    embedding_lr: float | None = None
    max_update_norm: float = 50.0
    lora_rank: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"FederationConfig.method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.sample_rate <= 1.0:
            raise ConfigError(f"FederationConfig.sample_rate must be in (0, 1], got {self.sample_rate!r}")
        for name in ("rounds", "local_steps", "batch_size", "lora_rank"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"FederationConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("local_lr", "server_lr", "max_update_norm"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"FederationConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("local_optimizer", "server_optimizer"):
            if getattr(self, name) not in ("adam", "sgd"):
                raise ConfigError(f"FederationConfig.{name} must be 'adam' or 'sgd', got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_run_config(self) -> dict[str, Any]:
        """Flower run-config form: kebab-case keys, no ``None`` values."""
        return {k.replace("_", "-"): v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> "FederationConfig":
        """Read the kebab-case keys this class knows; ignore other run-config keys."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name in known:
                values[name] = value
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"bad federation run config: {exc}") from None
