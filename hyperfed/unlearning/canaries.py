"""Canaries: random secrets planted in a client's data, and their exposure (Carlini et al.).

"The Secret Sharer" (Carlini et al., USENIX Security 2019) measures memorisation by planting
a random secret ``prefix + s`` (``s`` drawn from a space ``R``) in the training data and
ranking the model's log-perplexity of ``s`` among the other members of ``R``:

    exposure = log2 |R| − log2 rank

A model that never saw the canary ranks it uniformly at random, whose *expected* exposure is
``≈ log2(e) ≈ 1.44`` bits (not 0: log of a uniform rank is skewed); one that memorised it
ranks it first. ``R`` (here ``alphabet ** length``, 2**40 by default) is far too large to
enumerate, so the rank is estimated from ``num_candidates`` random members of ``R``:
``exposure ≈ log2(num_candidates + 1) − log2 rank``, which saturates at
``log2(num_candidates + 1)`` (~10 bits for 1000 candidates).

Every score uses the same candidates for a given ``seed`` (paired comparison): compare a
forgotten client's adapter with the base model under one seed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from hyperfed.data.canaries import (
    DEFAULT_ALPHABET,
    Canary,
    CanaryFormat,
    Tokenizer,
    canary_mask,
    distinct_secrets,
    encode_parts,
    make_canaries,
    plant_canaries,
)
from hyperfed.unlearning.logits import eval_mode, logits_of
from hypernet.errors import ConfigError

__all__ = [
    "DEFAULT_ALPHABET",
    "CanaryFormat",
    "Canary",
    "make_canaries",
    "plant_canaries",
    "canary_mask",
    "secret_log_perplexity",
    "exposure_from_scores",
    "canary_exposure",
    "mean_exposure",
]
# Making and planting canaries is data (the corpus plants them); this module measures them.

log = logging.getLogger(__name__)


@torch.no_grad()
def secret_log_perplexity(
    peft_model: nn.Module,
    adapter: Mapping[str, torch.Tensor] | None,
    prefix: str,
    secrets: Sequence[str],
    tokenizer: Tokenizer | None = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """``−log p(secret | prefix)`` in nats for each secret, ``(len(secrets),)`` float64.

    ``adapter=None`` scores the base model (``disable_adapter()``); otherwise the model runs
    functionally with ``adapter``. Secrets of different token lengths are right-padded; with
    a causal model padding never changes the scored positions.
    """
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be > 0, got {batch_size!r}")
    prefix_ids, secret_ids = encode_parts(prefix, secrets, tokenizer)
    p = len(prefix_ids)
    device = next(peft_model.parameters()).device
    scores = []
    with eval_mode(peft_model):
        for start in range(0, len(secret_ids), batch_size):
            chunk = secret_ids[start : start + batch_size]
            lengths = torch.tensor([len(s) for s in chunk])  # (b,)
            s = int(lengths.max())
            batch = torch.zeros(len(chunk), p + s, dtype=torch.long)  # (b, p + s), right-padded
            batch[:, :p] = prefix_ids
            for row, ids in enumerate(chunk):
                batch[row, p : p + len(ids)] = ids
            logits = logits_of(peft_model, adapter, batch.to(device))  # (b, p + s, vocab)
            # position j predicts token j + 1, so the secret's tokens are predicted at p-1 .. p+s-2
            logp = torch.log_softmax(logits[:, p - 1 : p + s - 1].double(), dim=-1)  # (b, s, vocab)
            token_logp = logp.gather(-1, batch[:, p:, None].to(device))[..., 0].cpu()  # (b, s)
            valid = torch.arange(s)[None, :] < lengths[:, None]  # (b, s)
            scores.append(-(token_logp * valid).sum(-1))
    return torch.cat(scores)


def exposure_from_scores(canary_score: float, candidate_scores: torch.Tensor) -> float:
    """Estimated exposure (bits) of a canary from its and the candidates' log-perplexities.

    ``rank = 1 + #(candidates scoring lower) + #(ties) / 2`` (ties split evenly, so a model
    that scores everything alike gets the expected rank, not the best); exposure is
    ``log2(len(candidate_scores) + 1) − log2(rank)``.
    """
    scores = torch.as_tensor(candidate_scores, dtype=torch.float64).flatten()  # (num_candidates,)
    if scores.numel() == 0 or not math.isfinite(canary_score) or not torch.isfinite(scores).all():
        raise ConfigError("exposure needs at least one candidate and finite scores")
    rank = 1.0 + float((scores < canary_score).sum()) + 0.5 * float((scores == canary_score).sum())
    return math.log2(scores.numel() + 1) - math.log2(rank)


def canary_exposure(
    peft_model: nn.Module,
    adapter: Mapping[str, torch.Tensor] | None,
    canary: Canary,
    num_candidates: int = 1000,
    seed: int = 0,
    tokenizer: Tokenizer | None = None,
    batch_size: int = 256,
) -> float:
    """Exposure (bits) of ``canary`` under ``peft_model`` with ``adapter`` (``None``: base model).

    The ``num_candidates`` candidates come from ``canary.format`` with ``seed`` (the canary
    itself excluded), so two calls with the same seed rank against the same candidates.
    The result lies in ``[0, log2(num_candidates + 1)]``; chance level is ≈ 1.44 bits.
    """
    return mean_exposure(peft_model, adapter, [canary], num_candidates, seed, tokenizer, batch_size)


def mean_exposure(
    peft_model: nn.Module,
    adapter: Mapping[str, torch.Tensor] | None,
    canaries: Sequence[Canary],
    num_candidates: int = 1000,
    seed: int = 0,
    tokenizer: Tokenizer | None = None,
    batch_size: int = 256,
) -> float:
    """Mean exposure (bits) over ``canaries``.

    Canaries of one format share one candidate set, scored once: the cost is
    ``num_candidates + len(canaries)`` sequences per format, not per canary.
    """
    if not canaries:
        raise ConfigError("mean_exposure needs at least one canary")
    if not isinstance(num_candidates, int) or num_candidates < 1:
        raise ConfigError(f"num_candidates must be a positive int, got {num_candidates!r}")
    by_format: dict[CanaryFormat, list[Canary]] = {}
    for canary in canaries:
        by_format.setdefault(canary.format, []).append(canary)
    exposures: list[float] = []
    for fmt, group in by_format.items():
        secrets = [c.secret for c in group]
        candidates = distinct_secrets(fmt, num_candidates, seed, exclude=set(secrets), unique=False)
        scores = secret_log_perplexity(peft_model, adapter, fmt.prefix, secrets + candidates, tokenizer, batch_size)
        canary_scores, candidate_scores = scores[: len(group)], scores[len(group) :]
        for canary, score in zip(group, canary_scores.tolist(), strict=True):
            exposure = exposure_from_scores(score, candidate_scores)
            log.debug("canary %s: %.3f nats, exposure %.2f bits", canary.secret, score, exposure)
            exposures.append(exposure)
    return sum(exposures) / len(exposures)
