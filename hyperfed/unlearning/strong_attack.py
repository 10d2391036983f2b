"""A stronger recovery attack: a fresh embedding *and* a free residual, steered by the canary format.

The first attack (:func:`hyperfed.unlearning.attack.embedding_recovery_attack`) only moves a
new embedding through the frozen hypernetwork. This one gives the attacker more capacity and
more knowledge:

- **capacity**: besides the embedding, a free per-target LoRA delta (the *residual*, zero at
  the start) is added to the generated adapter and fitted with it, for a small number of
  steps — as if the attacker could also fine-tune the adapter it is handed;
- **knowledge**: the attacker knows the canary *format* (its fixed prefix, e.g. ``"the
  secret code is "``) but not the secrets. Each step also lowers the loss of the prefixes,
  which pulls the embedding towards the part of the generator that saw them many times —
  the place where the secrets after them are memorised, if they still are.

The objective is ``text loss + prefix_weight · mean prefix loss``; the secrets never enter it.
As in the first attack the caller's hypernetwork and model are never modified: the fit runs
on a frozen private copy that holds no client embedding (the remaining clients' state is never
copied or read), and gradients are taken with ``torch.autograd.grad`` for the attacker's
tensors only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from hyperfed.data.canaries import Tokenizer, encode_parts
from hyperfed.unlearning.attack import _PROBE_ID, _check_embedding, _describe, _frozen_copy
from hyperfed.unlearning.logits import eval_mode
from hypernet.data import sample_batch
from hypernet.errors import ConfigError
from hypernet.functional import causal_lm_loss
from hypernet.hyperlora import HyperLoRA

__all__ = ["residual_recovery_attack", "prefix_token_ids", "add_residual", "zero_residual"]

log = logging.getLogger(__name__)

Adapter = dict[str, torch.Tensor]


def prefix_token_ids(prefixes: Sequence[str], tokenizer: Tokenizer | None = None) -> list[torch.Tensor]:
    """Token ids ``(1, p_k)`` of each distinct prefix (at least 2 tokens: one is predicted)."""
    out = []
    for prefix in dict.fromkeys(prefixes):  # distinct, in order
        ids, _ = encode_parts(prefix, ["x"], tokenizer)
        if len(ids) < 2:
            raise ConfigError(f"a canary prefix must tokenize to >= 2 tokens to be fitted, got {prefix!r}")
        out.append(ids[None, :])
    return out


def zero_residual(adapter: Mapping[str, torch.Tensor]) -> Adapter:
    """A trainable all-zero delta for every tensor of ``adapter`` (same shapes, dtypes, devices)."""
    return {k: torch.zeros_like(v, requires_grad=True) for k, v in adapter.items()}


def add_residual(adapter: Mapping[str, torch.Tensor], residual: Mapping[str, torch.Tensor]) -> Adapter:
    """``adapter + residual`` key by key; both must have the same keys."""
    if adapter.keys() != residual.keys():
        raise ConfigError("the residual must have exactly the adapter's keys")
    return {k: adapter[k] + residual[k] for k in adapter}


def residual_recovery_attack(
    hypernet: HyperLoRA,
    peft_model: nn.Module,
    blocks: torch.Tensor,
    prefixes: Sequence[str] = (),
    steps: int = 100,
    lr: float = 1e-2,
    residual_lr: float = 1e-3,
    prefix_weight: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    init: torch.Tensor | None = None,
    tokenizer: Tokenizer | None = None,
) -> Adapter:
    """Fit an embedding and a residual on ``blocks`` and the canary ``prefixes``; return the adapter.

    Parameters
    ----------
    hypernet:
        The (post-forget) generator; never modified.
    peft_model:
        The peft-wrapped base model the adapters are for; never modified.
    blocks:
        The attacker's text of the forgotten client ``(n_blocks, block_size)``, without the
        canaries (see :func:`hyperfed.unlearning.canary_mask`).
    prefixes:
        The canary formats' prefixes the attacker knows (empty: text only).
    steps, lr, residual_lr:
        Adam steps; learning rates of the embedding and of the residual (0 freezes it).
    prefix_weight:
        Weight of the prefixes' mean loss next to the text loss.
    seed:
        Seeds the initial embedding and batch sampling (same seed, same result).
    init:
        Starting embedding ``(client_dim,)`` instead of a random one.
    tokenizer:
        Encodes the prefixes (default: bytes, as the corpus).

    Returns
    -------
    dict[str, torch.Tensor]
        The attacker's adapter (generated from the fitted embedding, plus the residual) in
        peft's state-dict format, detached.
    """
    if not isinstance(steps, int) or steps < 0 or not lr > 0 or not residual_lr >= 0 or batch_size <= 0:
        raise ConfigError(
            "residual_recovery_attack needs steps >= 0, lr > 0, residual_lr >= 0 and batch_size > 0; "
            f"got {steps!r}, {lr!r}, {residual_lr!r}, {batch_size!r}"
        )
    if not prefix_weight >= 0:
        raise ConfigError(f"prefix_weight must be >= 0, got {prefix_weight!r}")
    is_blocks = isinstance(blocks, torch.Tensor) and blocks.dim() == 2 and blocks.dtype == torch.long
    if not is_blocks or blocks.shape[0] == 0:
        raise ConfigError(f"blocks must be a non-empty long tensor (n_blocks, block_size), got {_describe(blocks)}")
    gen = torch.Generator().manual_seed(seed)
    cfg = hypernet.config
    start = torch.randn(cfg.client_dim, generator=gen) * cfg.client_init_std if init is None else init
    shadow = _frozen_copy(hypernet)  # no client embeddings: the remaining clients are never read
    embedding = shadow.add_client(_PROBE_ID, _check_embedding(hypernet, start))
    device = next(peft_model.parameters()).device
    with torch.no_grad():
        residual = zero_residual(shadow.generate(_PROBE_ID))
    params: list[torch.Tensor] = [embedding, *residual.values()]
    groups = [{"params": [embedding], "lr": lr}]
    if residual_lr > 0:
        groups.append({"params": list(residual.values()), "lr": residual_lr})
    optimizer = torch.optim.Adam(groups)
    prefix_ids = [p.to(device) for p in prefix_token_ids(prefixes, tokenizer)] if prefix_weight > 0 else []
    losses = []
    with eval_mode(peft_model):
        for _ in range(steps):
            adapter = add_residual(shadow.generate(_PROBE_ID), residual)
            batch = sample_batch(blocks, batch_size, gen).to(device)  # (batch_size, block_size)
            loss = causal_lm_loss(peft_model, adapter, batch)
            if prefix_ids:
                prefix_loss = torch.stack([causal_lm_loss(peft_model, adapter, p) for p in prefix_ids]).mean()
                loss = loss + prefix_weight * prefix_loss
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            optimizer.step()
            losses.append(loss.item())
    if losses:
        log.info("residual recovery: %d steps, objective %.4f -> %.4f", steps, losses[0], losses[-1])
    with torch.no_grad():
        return {k: v.detach().clone() for k, v in add_residual(shadow.generate(_PROBE_ID), residual).items()}
