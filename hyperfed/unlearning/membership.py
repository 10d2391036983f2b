"""Loss-threshold membership inference (Yeom et al. 2018), scored as a tie-safe AUC.

The attacker guesses "member" when a block's loss is below a threshold. Sweeping the
threshold gives a ROC curve whose area is the probability that a random member block has a
*lower* loss than a random non-member block, with ties counted ½ — the Mann–Whitney U
statistic divided by ``n_members · n_nonmembers``. ``0.5`` is chance (nothing to tell the
sets apart), ``1.0`` perfect separation, ``< 0.5`` members look *less* familiar than
non-members. Counting ties as ½ matters: a model that scores every block alike (or a
quantised loss) must read 0.5, not 0 or 1 depending on the comparison's direction.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from hyperfed.unlearning.logits import eval_mode, logits_of
from hypernet.errors import ConfigError

__all__ = ["block_losses", "membership_auc"]


@torch.no_grad()
def block_losses(
    peft_model: nn.Module,
    adapter: Mapping[str, torch.Tensor] | None,
    blocks: torch.Tensor,
    batch_size: int = 16,
) -> torch.Tensor:
    """Mean next-token loss (nats/token) of every block, ``(n_blocks,)`` float64 on the CPU.

    Parameters
    ----------
    peft_model:
        A peft-wrapped causal LM.
    adapter:
        LoRA weights in peft's state-dict format, or ``None`` for the base model.
    blocks:
        Token ids ``(n_blocks, block_size)``, ``block_size >= 2``.
    batch_size:
        Blocks per forward pass.
    """
    if not (isinstance(blocks, torch.Tensor) and blocks.dim() == 2 and blocks.shape[0] > 0 and blocks.shape[1] >= 2):
        shape = tuple(blocks.shape) if isinstance(blocks, torch.Tensor) else type(blocks).__name__
        raise ConfigError(f"blocks must be a non-empty (n_blocks, block_size >= 2) tensor, got {shape}")
    if batch_size <= 0:
        raise ConfigError(f"batch_size must be > 0, got {batch_size!r}")
    device = next(peft_model.parameters()).device
    out = []
    with eval_mode(peft_model):
        for start in range(0, blocks.shape[0], batch_size):
            batch = blocks[start : start + batch_size].to(device)  # (b, t)
            logits = logits_of(peft_model, adapter, batch)[:, :-1]  # (b, t-1, vocab) predicts tokens 1..t-1
            nll = F.cross_entropy(logits.transpose(1, 2).float(), batch[:, 1:], reduction="none")  # (b, t-1)
            out.append(nll.mean(-1).double().cpu())
    return torch.cat(out)


def membership_auc(member_losses: torch.Tensor, nonmember_losses: torch.Tensor) -> float:
    """AUC of the loss-threshold attack: ``P(member loss < non-member loss) + ½ P(equal)``.

    Computed exactly from average ranks (Mann–Whitney U), ``O(n log n)``.

    Parameters
    ----------
    member_losses:
        Per-example losses of training (member) data, any shape, flattened.
    nonmember_losses:
        Per-example losses of held-out (non-member) data.

    Raises
    ------
    ConfigError
        If either set is empty or holds a NaN/inf.
    """
    members = torch.as_tensor(member_losses, dtype=torch.float64).flatten()  # (m,)
    nonmembers = torch.as_tensor(nonmember_losses, dtype=torch.float64).flatten()  # (n,)
    for name, t in (("member_losses", members), ("nonmember_losses", nonmembers)):
        if t.numel() == 0 or not torch.isfinite(t).all():
            raise ConfigError(f"membership_auc: {name} must be non-empty and finite")
    m, n = members.numel(), nonmembers.numel()
    pooled = torch.cat([members, nonmembers])  # (m + n,)
    _, inverse, counts = torch.unique(pooled, sorted=True, return_inverse=True, return_counts=True)
    # Average 1-based rank of each distinct value: ranks first+1 .. first+count share their mean.
    first = torch.cumsum(counts, 0) - counts  # (distinct,)
    avg_rank = first.double() + (counts.double() + 1) / 2  # (distinct,)
    nonmember_rank_sum = avg_rank[inverse[m:]].sum().item()
    # U of the non-members: pairs where the non-member's loss is higher (ties ½).
    u = nonmember_rank_sum - n * (n + 1) / 2
    return float(u / (m * n))
