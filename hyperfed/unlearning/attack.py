"""Embedding-recovery attack: can the frozen hypernetwork be made to re-emit a forgotten client?

Deleting a client's embedding only unlearns it if the *shared* weights cannot simply be
steered back to its adapter. The attacker here holds other text of the forgotten client (its
validation text, or train text without the canaries) and white-box access to the frozen
hypernetwork; it fits a fresh embedding by gradient descent on that text and generates the
adapter. If that adapter's canary exposure returns to the forgotten adapter's level, the
shared weights still hold the secrets (DESIGN §8).

Nothing here changes the caller's hypernetwork: the attack runs on a private copy with no
client embeddings (no client is ever registered in the original, even temporarily), every
shared weight is frozen, and gradients are taken with ``torch.autograd.grad`` with respect to
the new embedding only, so no ``.grad`` is written anywhere else.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from hyperfed.unlearning.logits import eval_mode
from hypernet.data import sample_batch
from hypernet.embeddings import ClientEmbeddings
from hypernet.errors import ConfigError
from hypernet.functional import causal_lm_loss
from hypernet.hyperlora import HyperLoRA

__all__ = ["embedding_recovery_attack", "adapter_from_embedding"]

log = logging.getLogger(__name__)

Adapter = dict[str, torch.Tensor]

_PROBE_ID = "embedding-recovery-probe"


def adapter_from_embedding(hypernet: HyperLoRA, embedding: torch.Tensor) -> Adapter:
    """The adapter ``hypernet`` generates for an arbitrary client embedding ``(client_dim,)``.

    Returns detached tensors in peft's state-dict format, exactly what
    ``hypernet.generate(cid)`` returns for a client registered with ``embedding``. The
    hypernetwork is left as it was: no client is registered, no weight or gradient changes.
    """
    shadow = _frozen_copy(hypernet)
    shadow.add_client(_PROBE_ID, _check_embedding(hypernet, embedding))
    with torch.no_grad():
        return {k: v.detach() for k, v in shadow.generate(_PROBE_ID).items()}


def embedding_recovery_attack(
    hypernet: HyperLoRA,
    peft_model: nn.Module,
    blocks: torch.Tensor,
    steps: int = 100,
    lr: float = 1e-2,
    seed: int = 0,
    batch_size: int = 8,
    init: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fit a fresh client embedding to ``blocks`` against the frozen hypernetwork.

    Parameters
    ----------
    hypernet:
        The (post-forget) generator; never modified.
    peft_model:
        The peft-wrapped base model the adapters are for; never modified.
    blocks:
        The attacker's text of the forgotten client, ``(n_blocks, block_size)`` long. Must
        not contain the canaries (see :func:`hyperfed.unlearning.canary_mask`).
    steps, lr, batch_size:
        Adam steps on the embedding, its learning rate, blocks per step.
    seed:
        Seeds the initial embedding (a new client's init) and batch sampling.
    init:
        Starting embedding ``(client_dim,)`` instead of a random one (e.g. the mean of the
        remaining clients' embeddings).

    Returns
    -------
    torch.Tensor
        The fitted embedding ``(client_dim,)``, detached; turn it into an adapter with
        :func:`adapter_from_embedding`.
    """
    if not isinstance(steps, int) or steps < 0 or not lr > 0 or batch_size <= 0:
        raise ConfigError(
            "embedding_recovery_attack needs steps >= 0, lr > 0 and batch_size > 0; "
            f"got {steps!r}, {lr!r}, {batch_size!r}"
        )
    is_blocks = isinstance(blocks, torch.Tensor) and blocks.dim() == 2 and blocks.dtype == torch.long
    if not is_blocks or blocks.shape[0] == 0:
        raise ConfigError(f"blocks must be a non-empty long tensor (n_blocks, block_size), got {_describe(blocks)}")
    gen = torch.Generator().manual_seed(seed)
    cfg = hypernet.config
    start = torch.randn(cfg.client_dim, generator=gen) * cfg.client_init_std if init is None else init
    shadow = _frozen_copy(hypernet)
    embedding = shadow.add_client(_PROBE_ID, _check_embedding(hypernet, start))  # the only trainable tensor
    optimizer = torch.optim.Adam([embedding], lr=lr)
    device = next(peft_model.parameters()).device
    losses = []
    with eval_mode(peft_model):
        for _ in range(steps):
            batch = sample_batch(blocks, batch_size, gen).to(device)  # (batch_size, block_size)
            loss = causal_lm_loss(peft_model, shadow.generate(_PROBE_ID), batch)
            (grad,) = torch.autograd.grad(loss, [embedding])
            embedding.grad = grad
            optimizer.step()
            losses.append(loss.item())
    if losses:
        log.info("embedding recovery: %d steps, loss %.4f -> %.4f", steps, losses[0], losses[-1])
    return embedding.detach().clone()


def _frozen_copy(hypernet: HyperLoRA) -> HyperLoRA:
    """A deep copy of ``hypernet`` with no client embeddings and every weight frozen."""
    ref = next(iter(hypernet.shared_parameters()))
    empty = ClientEmbeddings(hypernet.clients.dim, hypernet.clients.init_std, hypernet.clients.seed)
    empty.to(device=ref.device, dtype=ref.dtype)
    # The memo makes deepcopy use `empty` in place of the clients module: the other clients'
    # embeddings are never copied.
    shadow = copy.deepcopy(hypernet, memo={id(hypernet.clients): empty})
    for p in shadow.parameters():
        p.requires_grad_(False)
        p.grad = None
    return shadow


def _check_embedding(hypernet: HyperLoRA, embedding: torch.Tensor) -> torch.Tensor:
    dim = hypernet.config.client_dim
    is_vector = isinstance(embedding, torch.Tensor) and tuple(embedding.shape) == (dim,)
    if not is_vector or not torch.isfinite(embedding).all():
        raise ConfigError(f"a client embedding must be a finite tensor of shape ({dim},), got {_describe(embedding)}")
    return embedding.detach()


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
