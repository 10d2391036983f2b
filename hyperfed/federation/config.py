"""What a federated run trains and how: the federation part of :class:`hyperfed.config.RunConfig`.

The client and server parts *are* hypernet's own configs — :class:`~hypernet.LocalTrainConfig`
(what a client runs each round) and :class:`~hypernet.TrainerConfig` (how the server's
hypernetwork learns from the replies) — so nothing is re-mapped field by field. The
federation's ``seed`` is the one seed: it is copied into both parts, and each client's
round derives its own batch-sampling seed from (seed, round, client id).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hypernet import LocalTrainConfig, TrainerConfig
from hypernet.errors import ConfigError

__all__ = ["FederationConfig", "local_seed", "SHARED_POLICIES", "DP_SCOPES"]

#: How the hypernetwork's shared weights may learn from clients (see :class:`FederationConfig`).
SHARED_POLICIES = ("shared", "frozen", "dp")
#: Which shared weights learn under the ``dp`` policy (:attr:`FederationConfig.dp_scope`).
DP_SCOPES = ("all", "base")


def local_seed(seed: int, round_: int, client_id: str) -> int:
    """Seed of a client's batch sampling in a round: a function of (seed, round, id) only."""
    digest = hashlib.sha256(f"hyperfed-local\x00{seed}\x00{round_}\x00{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def _default_local() -> LocalTrainConfig:
    return LocalTrainConfig(steps=10, lr=3e-3, batch_size=8, optimizer="adam")


def _default_server() -> TrainerConfig:
    # Base adapters take a plain SGD step of the clients' mean update (base_lr=1.0, exactly a
    # FedAvg step); trunk, heads and embeddings use Adam. Measured on the demo corpus, the
    # pFedHN default (SGD 1e-2) moved the generated adapters ~10x slower than FedAvg and lost.
    return TrainerConfig(lr=3e-3, optimizer="adam", momentum=0.0, base_lr=1.0)


@dataclass(frozen=True)
class FederationConfig:
    """Settings shared by every method (the same budget for all).

    Attributes
    ----------
    method: a name from the method registry (:data:`hyperfed.federation.METHODS`).
    generator: the hypernetwork of a HyperLoRA run: an architecture tag of
        :data:`hypernet.GENERATORS`.
    rounds: federated rounds.
    sample_rate: each client's independent probability of taking part in a round.
    lora_rank: LoRA rank of the adapters.
    max_update_norm: replies whose ‖θ̃ − θ‖₂ exceeds this are rejected.
    seed: seeds sampling, client training and the hypernetwork.
    client_residual: a HyperLoRA run gives each client its own residual adapter
        (:class:`hypernet.HyperLoRAConfig` ``client_residual``): client-owned capacity that
        forget deletes with the embedding.
    shared_policy: how the shared weights (everything not owned by one client) learn:
        ``"shared"`` — from every client's pFedHN gradient (no unlearning guarantee: delete
        leaves a residual, measured; use the exact mode); ``"frozen"`` — never during the
        federation, only client-owned state learns (delete is exact by construction);
        ``"dp"`` — client-level differential privacy: each client's contribution to the
        shared gradient is clipped to ``dp_clip`` (L2), Gaussian noise of std
        ``dp_noise_multiplier · dp_clip`` is added to the sum, which is divided by the
        expected number of clients per round (``sample_rate`` × registered clients).
    dp_noise_multiplier, dp_clip, dp_delta: the ``dp`` policy's noise multiplier z, clipping
        norm C and the δ at which ε is reported (:mod:`hyperfed.federation.privacy`).
    dp_scope: which shared weights learn under ``dp``: ``"all"`` (trunk, heads and base
        adapters) or ``"base"`` (only the per-target base adapters, a DP-FedAvg of the
        adapter everyone starts from; the trunk and heads keep their initial or publicly
        pretrained values). Fewer noised coordinates: the same z and C put far less noise
        on the model.
    public_pretrain_rounds: before the federation, a HyperLoRA run trains its hypernetwork
        (shared weights included) this many rounds on public pseudo-clients cut from the
        corpus's pretraining text, then drops them
        (:mod:`hyperfed.federation.public_pretrain`); ``0``: no public pretraining. Under
        ``frozen`` the shared weights are then public-only: delete stays exact.
    local: the client's LoRA fine-tuning per round (its ``seed`` is set from ``seed``).
    server: the hypernetwork's optimisation (pFedHN update; its ``seed`` is set from ``seed``).
    """

    method: str = "hyperlora"
    generator: str = "hyperlora"
    rounds: int = 15
    sample_rate: float = 1.0
    lora_rank: int = 8
    max_update_norm: float = 50.0
    seed: int = 0
    client_residual: bool = False
    shared_policy: str = "shared"
    dp_noise_multiplier: float = 1.0
    dp_clip: float = 1.0
    dp_delta: float = 1e-5
    dp_scope: str = "all"
    public_pretrain_rounds: int = 0
    local: LocalTrainConfig = field(default_factory=_default_local)
    server: TrainerConfig = field(default_factory=_default_server)

    def __post_init__(self) -> None:
        from hyperfed.federation.methods import METHODS  # the registry imports the servers

        if self.method not in METHODS:
            raise ConfigError(f"FederationConfig.method must be one of {list(METHODS)}, got {self.method!r}")
        from hypernet import GENERATORS

        if self.generator not in GENERATORS:
            raise ConfigError(f"FederationConfig.generator must be one of {list(GENERATORS)}, got {self.generator!r}")
        if not 0.0 < self.sample_rate <= 1.0:
            raise ConfigError(f"FederationConfig.sample_rate must be in (0, 1], got {self.sample_rate!r}")
        for name in ("rounds", "lora_rank"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"FederationConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not self.max_update_norm > 0:
            raise ConfigError(f"FederationConfig.max_update_norm must be > 0, got {self.max_update_norm!r}")
        if self.shared_policy not in SHARED_POLICIES:
            raise ConfigError(
                f"FederationConfig.shared_policy must be one of {list(SHARED_POLICIES)}, got {self.shared_policy!r}"
            )
        if not isinstance(self.client_residual, bool):
            raise ConfigError(f"FederationConfig.client_residual must be true or false, got {self.client_residual!r}")
        if not self.dp_noise_multiplier >= 0:
            raise ConfigError(f"FederationConfig.dp_noise_multiplier must be >= 0, got {self.dp_noise_multiplier!r}")
        if not self.dp_clip > 0:
            raise ConfigError(f"FederationConfig.dp_clip must be > 0, got {self.dp_clip!r}")
        if not 0.0 < self.dp_delta < 1.0:
            raise ConfigError(f"FederationConfig.dp_delta must be in (0, 1), got {self.dp_delta!r}")
        if self.dp_scope not in DP_SCOPES:
            raise ConfigError(f"FederationConfig.dp_scope must be one of {list(DP_SCOPES)}, got {self.dp_scope!r}")
        if isinstance(self.public_pretrain_rounds, bool) or not (
            isinstance(self.public_pretrain_rounds, int) and self.public_pretrain_rounds >= 0
        ):
            raise ConfigError(
                f"FederationConfig.public_pretrain_rounds must be an int >= 0, got {self.public_pretrain_rounds!r}"
            )
        if self.local.steps <= 0:
            raise ConfigError(f"FederationConfig.local.steps must be > 0, got {self.local.steps!r}")
        # One seed for the whole tree (frozen dataclass: set through object.__setattr__).
        object.__setattr__(self, "local", replace(self.local, seed=self.seed))
        object.__setattr__(self, "server", replace(self.server, seed=self.seed))

    def local_config(self, round_: int, client_id: str) -> LocalTrainConfig:
        """What ``client_id`` runs in ``round_``: :attr:`local` with its own sampling seed."""
        return replace(self.local, seed=local_seed(self.seed, round_, client_id))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
