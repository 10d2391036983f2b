"""Per-client token data as fixed-length blocks, and seeded batch sampling."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hypernet.errors import ConfigError

__all__ = ["ClientData", "to_blocks", "sample_batch"]


def to_blocks(token_ids: torch.Tensor | list[int], block_size: int) -> torch.Tensor:
    """Cut a 1-D token sequence into non-overlapping blocks ``(n_blocks, block_size)``.

    The ragged tail is dropped. Raises :class:`ConfigError` if not even one block fits.
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long).flatten()
    n_blocks = ids.numel() // block_size
    if n_blocks == 0:
        raise ConfigError(f"{ids.numel()} tokens do not fill one block of {block_size}")
    return ids[: n_blocks * block_size].view(n_blocks, block_size)


@dataclass
class ClientData:
    """A client's private train, validation and (optional) test blocks, each ``(n_blocks, block_size)``.

    ``val`` selects (rounds, learning rates, fine-tuning steps); ``test`` is only reported,
    never used to choose anything.
    """

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor | None = None

    def __post_init__(self) -> None:
        for name in ("train", "val") + (("test",) if self.test is not None else ()):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[0] == 0 or t.dtype != torch.long:
                raise ConfigError(
                    f"ClientData.{name} must be a non-empty long tensor (n_blocks, block_size), "
                    f"got {getattr(t, 'shape', type(t))}"
                )


def sample_batch(blocks: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """``batch_size`` blocks drawn with replacement, reproducibly from ``generator``."""
    index = torch.randint(0, blocks.shape[0], (batch_size,), generator=generator)
    return blocks[index]
