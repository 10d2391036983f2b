"""Client-level differential privacy of the shared weights (the ``dp`` shared-weight policy).

Under ``FederationConfig.shared_policy = "dp"`` a round's shared update is built the way
DP-FedAvg builds it (McMahan et al. 2018), in the hypernetwork's shared-parameter space:

1. each accepted client's pFedHN gradient on the *shared* parameters is computed on its own;
2. it is clipped to L2 norm ``dp_clip`` (C);
3. the clipped gradients are summed and Gaussian noise ``N(0, (z·C)²)`` is added to every
   coordinate (z = ``dp_noise_multiplier``);
4. the sum is divided by the *expected* number of clients per round (``sample_rate`` ×
   registered clients), so the divisor does not depend on who took part.

Client-owned state (embedding, residual adapter) steps on the client's own, unclipped
gradient: it is deleted with the client, so it needs no noise. Participation is Poisson
sampled, so the accounting is that of the Poisson-subsampled Gaussian mechanism composed
over the rounds, computed by Opacus's RDP accountant (never by hand here). Because DP is
closed under post-processing, after a client's embedding and residual are deleted the
remaining model is (ε, δ)-indistinguishable from one trained without that client
("DP implies unlearning": Ginart et al. 2019, Sekhari et al. 2021). The guarantee also
needs the sampling seed and the noise to be secret from whoever tests it.
"""

from __future__ import annotations

import logging
import math
import secrets
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from hypernet.errors import ConfigError
from hypernet.pfedhn import pfedhn_backward

if TYPE_CHECKING:
    from hyperfed.federation.config import FederationConfig
    from hypernet import HypernetTrainer

__all__ = [
    "client_level_epsilon",
    "describe_guarantee",
    "forget_guarantee",
    "clip_and_noise",
    "dp_shared_update",
    "secret_generator",
    "SHARED_TEXT",
]

log = logging.getLogger(__name__)

#: What a ``shared``-policy report says about its guarantee.
SHARED_TEXT = "no guarantee: residual measured; use --mode exact"

Adapter = Mapping[str, torch.Tensor]


def client_level_epsilon(noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """ε of ``rounds`` Poisson-sampled Gaussian rounds at ``delta`` (Opacus ``RDPAccountant``).

    ``noise_multiplier`` 0 gives ``inf`` (no privacy). Raises :class:`ConfigError` on values
    outside their ranges.
    """
    if not 0.0 < sample_rate <= 1.0 or rounds < 0 or not 0.0 < delta < 1.0 or noise_multiplier < 0:
        raise ConfigError(
            f"client_level_epsilon needs noise_multiplier >= 0, sample_rate in (0, 1], rounds >= 0 and "
            f"delta in (0, 1); got {noise_multiplier}, {sample_rate}, {rounds}, {delta}"
        )
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    try:
        from opacus.accountants import RDPAccountant
    except ImportError as exc:  # pragma: no cover - an install without the privacy extra
        raise ConfigError("the dp policy's accounting needs Opacus: pip install 'hyperfed[privacy]'") from exc
    accountant = RDPAccountant()
    accountant.history = [(float(noise_multiplier), float(sample_rate), int(rounds))]
    with warnings.catch_warnings():  # the accountant warns when the best RDP order is at the grid's edge
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta=delta))


def describe_guarantee(fed: FederationConfig, rounds: int) -> dict[str, Any]:
    """What a forget of a run under ``fed`` guarantees after ``rounds`` rounds.

    Returns ``{"policy", "guarantee", "epsilon", "delta", "text"}``; ``guarantee`` is
    ``"exact"`` (``frozen``), ``"(ε, δ)-DP"`` (``dp``) or ``"none"`` (``shared``).
    """
    policy = fed.shared_policy
    # public pretraining costs no privacy: it runs before any client, on text no client owns
    public = (
        f"pretrained on public text only, {fed.public_pretrain_rounds} rounds before any client"
        if fed.public_pretrain_rounds
        else ""
    )
    if policy == "frozen":
        public = f" (they were {public})" if public else ""
        return {
            "policy": policy,
            "guarantee": "exact",
            "epsilon": 0.0,
            "delta": 0.0,
            "text": f"exact: the shared weights never learned from a client during the federation{public} "
            "(their hash is the one committed at registration); delete removes all client-owned state",
        }
    if policy == "dp":
        eps = client_level_epsilon(fed.dp_noise_multiplier, fed.sample_rate, rounds, fed.dp_delta)
        shown = f"{eps:.3g}" if math.isfinite(eps) else "∞ (z = 0: no privacy)"
        scope = "" if fed.dp_scope == "all" else " (only the base adapters learn; the trunk and heads stay fixed)"
        public = f"; the shared weights were {public}" if public else ""
        return {
            "policy": policy,
            "guarantee": "(ε, δ)-DP",
            "epsilon": eps if math.isfinite(eps) else None,  # JSON and the ledger take no infinity
            "delta": fed.dp_delta,
            "text": f"client-level (ε = {shown}, δ = {fed.dp_delta:g})-DP of the shared weights{scope} over {rounds} "
            f"rounds{public} (z = {fed.dp_noise_multiplier:g}, C = {fed.dp_clip:g}, q = {fed.sample_rate:g}); "
            "after delete the model is (ε, δ)-indistinguishable from one trained without the client",
        }
    return {"policy": policy, "guarantee": "none", "epsilon": None, "delta": None, "text": SHARED_TEXT}


def forget_guarantee(
    fed: FederationConfig, rounds: int, replays: bool, participations: int | None = None
) -> dict[str, Any]:
    """What one forget guarantees: :func:`describe_guarantee` of the run's policy, unless the
    forget mode ``replays`` the rounds without the client (then ``"exact"`` under any policy).

    Under ``dp`` a delete also states ``epsilon_known_participation``: ε for an observer who
    knows the ``participations`` rounds the client took part in (the ledger's generation
    records show them), i.e. the Gaussian mechanism composed that many times *without*
    amplification by sampling (Opacus, sample rate 1). ``epsilon`` assumes participation is
    secret; the honest bound for a ledger reader is the second number.
    """
    if replays and fed.shared_policy != "frozen":
        return {
            "policy": fed.shared_policy,
            "guarantee": "exact",
            "epsilon": 0.0,
            "delta": 0.0,
            "text": "exact: rolled back to the checkpoint before the client's first contribution and "
            + (
                "replayed without it (with fresh DP noise)"
                if fed.shared_policy == "dp"
                else "replayed without it (the result equals a run that never had the client)"
            ),
        }
    stated = describe_guarantee(fed, rounds)
    if fed.shared_policy == "dp" and participations is not None:
        known = client_level_epsilon(fed.dp_noise_multiplier, 1.0, participations, fed.dp_delta)
        stated["epsilon_known_participation"] = known if math.isfinite(known) else None
        stated["text"] += (
            f"; for an observer who knows the client's {participations} rounds (the ledger's generation "
            f"records show them) ε = {known:.3g}"
        )
    return stated


def secret_generator() -> torch.Generator:
    """A CPU generator seeded from the OS's secure randomness (the DP noise must be secret)."""
    return torch.Generator().manual_seed(secrets.randbits(63))


def clip_and_noise(
    gradients: Sequence[Sequence[torch.Tensor]],
    clip: float,
    noise_multiplier: float,
    expected_clients: float,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """``(Σᵢ clip(gᵢ, C) + N(0, (z·C)²)) / expected_clients``, per parameter.

    ``gradients[i]`` is client i's gradient as a list of tensors (one per shared parameter);
    clipping is on the L2 norm over all of them together. Noise is drawn on the CPU from
    ``generator`` in float64, then cast to each parameter's dtype and device.
    """
    if not gradients:
        raise ConfigError("clip_and_noise needs at least one client's gradient")
    if not clip > 0 or noise_multiplier < 0 or not expected_clients > 0:
        raise ConfigError(
            f"need clip > 0, noise_multiplier >= 0, expected_clients > 0; got {clip}, "
            f"{noise_multiplier}, {expected_clients}"
        )
    total = [torch.zeros_like(g, dtype=torch.float64) for g in gradients[0]]
    for grads in gradients:
        norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
        factor = min(1.0, clip / norm) if norm > 0 else 1.0
        for acc, g in zip(total, grads, strict=True):
            acc.add_(g.double(), alpha=factor)
    out = []
    for acc in total:
        noise = torch.randn(acc.shape, generator=generator, dtype=torch.float64) * (noise_multiplier * clip)
        out.append((acc + noise.to(acc.device)) / expected_clients)
    return [o.to(g.dtype) for o, g in zip(out, gradients[0], strict=True)]


def dp_shared_update(
    trainer: HypernetTrainer,
    returned: Mapping[str, Adapter],
    sent: Mapping[str, Adapter],
    clip: float,
    noise_multiplier: float,
    expected_clients: float,
    generator: torch.Generator,
    scope: str = "all",
) -> dict[str, float]:
    """One ``dp`` step: per-client shared gradients clipped and noised (:func:`clip_and_noise`),
    client-owned state from each client's own unclipped gradient. Returns ``‖θᵢ − θ̃ᵢ‖₂``.

    ``scope`` ``"base"``: only the base adapters are clipped, noised and stepped; the other
    shared weights get no gradient (they do not move)."""
    hypernet = trainer.hypernet
    shared = hypernet.base_parameters() if scope == "base" else hypernet.shared_parameters()
    learning = {id(p) for p in shared}
    still = [p for p in hypernet.shared_parameters() if id(p) not in learning]
    trainer.zero_grad()
    per_client: list[list[torch.Tensor]] = []
    norms: dict[str, float] = {}
    for cid in returned:  # one backward per client: its shared gradient alone
        for p in shared:
            p.grad = None
        norms |= pfedhn_backward(hypernet, {cid: returned[cid]}, {cid: sent[cid]})
        per_client.append([p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in shared])
    noisy = clip_and_noise(per_client, clip, noise_multiplier, expected_clients, generator)
    for p, g in zip(shared, noisy, strict=True):
        p.grad = g
    for p in still:
        p.grad = None
    trainer.step_from_gradients()  # embeddings and residuals kept their own (unclipped) gradients
    return norms
