"""Unlearning: forgetting a client, and measuring that it is forgotten.

``forget_client(run_dir, client_id, mode="delete" | "exact")`` removes a client and every
trace of it (see :mod:`hyperfed.unlearning.forget`).

Measurements (pure functions, see DESIGN §5 and §8): canary exposure (Carlini et al.,
"The Secret Sharer"), loss-threshold membership-inference AUC, and an embedding-recovery
attack against the frozen hypernetwork, and a stronger one (embedding + residual, steered by
the canary prefixes).

Names load on first use (PEP 562): importing the package (or its light registry,
:mod:`hyperfed.unlearning.modes`) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypernet.lazy import lazy_attributes

if TYPE_CHECKING:
    from hyperfed.unlearning.attack import adapter_from_embedding, embedding_recovery_attack
    from hyperfed.unlearning.canaries import (
        DEFAULT_ALPHABET,
        Canary,
        CanaryFormat,
        canary_exposure,
        canary_mask,
        exposure_from_scores,
        make_canaries,
        mean_exposure,
        plant_canaries,
        secret_log_perplexity,
    )
    from hyperfed.unlearning.forget import ForgetResult, forget_client, forgotten_clients, recover_pending_forget
    from hyperfed.unlearning.membership import block_losses, membership_auc
    from hyperfed.unlearning.strong_attack import residual_recovery_attack

__all__ = [
    "forget_client",
    "recover_pending_forget",
    "forgotten_clients",
    "ForgetResult",
    "Canary",
    "CanaryFormat",
    "DEFAULT_ALPHABET",
    "make_canaries",
    "plant_canaries",
    "canary_mask",
    "secret_log_perplexity",
    "exposure_from_scores",
    "canary_exposure",
    "mean_exposure",
    "block_losses",
    "membership_auc",
    "embedding_recovery_attack",
    "adapter_from_embedding",
    "residual_recovery_attack",
]

_LAZY = {
    "ForgetResult": "hyperfed.unlearning.forget",
    "forget_client": "hyperfed.unlearning.forget",
    "forgotten_clients": "hyperfed.unlearning.forget",
    "recover_pending_forget": "hyperfed.unlearning.forget",
    "adapter_from_embedding": "hyperfed.unlearning.attack",
    "embedding_recovery_attack": "hyperfed.unlearning.attack",
    "residual_recovery_attack": "hyperfed.unlearning.strong_attack",
    "DEFAULT_ALPHABET": "hyperfed.unlearning.canaries",
    "Canary": "hyperfed.unlearning.canaries",
    "CanaryFormat": "hyperfed.unlearning.canaries",
    "canary_exposure": "hyperfed.unlearning.canaries",
    "canary_mask": "hyperfed.unlearning.canaries",
    "exposure_from_scores": "hyperfed.unlearning.canaries",
    "make_canaries": "hyperfed.unlearning.canaries",
    "mean_exposure": "hyperfed.unlearning.canaries",
    "plant_canaries": "hyperfed.unlearning.canaries",
    "secret_log_perplexity": "hyperfed.unlearning.canaries",
    "block_losses": "hyperfed.unlearning.membership",
    "membership_auc": "hyperfed.unlearning.membership",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
