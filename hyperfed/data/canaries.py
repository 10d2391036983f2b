"""Canaries: random secrets planted in a client's training text, to measure memorisation.

"The Secret Sharer" (Carlini et al., USENIX Security 2019): a canary is ``prefix + s`` with
``s`` drawn at random from a space ``R`` (``alphabet ** length``, 2**40 by default). This
module makes and plants them (the corpus plants them when ``CorpusConfig.canary_client`` is
set); measuring their exposure is :mod:`hyperfed.unlearning.canaries`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from hyperfed.data.tokenizer import ByteTokenizer
from hypernet.data import ClientData
from hypernet.errors import ConfigError

__all__ = [
    "DEFAULT_ALPHABET",
    "Tokenizer",
    "CanaryFormat",
    "Canary",
    "make_canaries",
    "plant_canaries",
    "canary_mask",
    "encode_parts",
    "distinct_secrets",
]

# 32 symbols (RFC 4648 base32, lower case): 5 bits per character, one byte each in UTF-8.
DEFAULT_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


class Tokenizer(Protocol):
    """Anything with ``encode(text) -> token ids`` (default: :class:`ByteTokenizer`)."""

    def encode(self, text: str) -> torch.Tensor | list[int]: ...


@dataclass(frozen=True)
class CanaryFormat:
    """The space ``R`` canaries and their candidates are drawn from: ``prefix`` + a secret
    of ``length`` characters, each uniform over ``alphabet``.

    Attributes
    ----------
    prefix: fixed context before the secret; the secret is scored *given* it (non-empty).
    length: characters in the secret.
    alphabet: distinct characters the secret is drawn from (at least 2).
    """

    prefix: str = "the secret code is "
    length: int = 8
    alphabet: str = DEFAULT_ALPHABET

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not self.prefix:
            raise ConfigError(f"CanaryFormat.prefix must be a non-empty string, got {self.prefix!r}")
        if not isinstance(self.length, int) or isinstance(self.length, bool) or self.length <= 0:
            raise ConfigError(f"CanaryFormat.length must be a positive int, got {self.length!r}")
        if len(self.alphabet) < 2 or len(set(self.alphabet)) != len(self.alphabet):
            raise ConfigError(f"CanaryFormat.alphabet needs >= 2 distinct characters, got {self.alphabet!r}")

    @property
    def log2_space_size(self) -> float:
        """``log2 |R|``: the largest exposure a full enumeration could report."""
        return self.length * math.log2(len(self.alphabet))

    def sample_secrets(self, n: int, generator: torch.Generator) -> list[str]:
        """``n`` secrets drawn uniformly (with replacement) from ``R``."""
        index = torch.randint(0, len(self.alphabet), (n, self.length), generator=generator)  # (n, length)
        return ["".join(self.alphabet[i] for i in row) for row in index.tolist()]


@dataclass(frozen=True)
class Canary:
    """One planted secret: ``format.prefix + secret``."""

    secret: str
    format: CanaryFormat = field(default_factory=CanaryFormat)

    def __post_init__(self) -> None:
        fmt = self.format
        if len(self.secret) != fmt.length or any(ch not in fmt.alphabet for ch in self.secret):
            raise ConfigError(f"canary secret {self.secret!r} must be {fmt.length} characters from {fmt.alphabet!r}")

    @property
    def text(self) -> str:
        return self.format.prefix + self.secret

    def token_ids(self, tokenizer: Tokenizer | None = None) -> torch.Tensor:
        """Prefix and secret tokenized *separately* and concatenated, ``(t,)`` long.

        Separate tokenization keeps the secret's tokens identical in training data and in
        scoring even with a BPE tokenizer that would merge across the boundary.
        """
        prefix, secret = encode_parts(self.format.prefix, [self.secret], tokenizer)
        return torch.cat([prefix, secret[0]])


def make_canaries(n: int, seed: int, format: CanaryFormat | None = None) -> list[Canary]:
    """``n`` distinct canaries, a deterministic function of ``(n, seed, format)``.

    Raises
    ------
    ConfigError
        If ``n`` is not positive or exceeds the size of the space.
    """
    fmt = format or CanaryFormat()
    if not isinstance(n, int) or n <= 0 or math.log2(n) > fmt.log2_space_size:
        raise ConfigError(f"make_canaries: n must be in 1..|R|, got {n!r}")
    secrets = distinct_secrets(fmt, n, seed, exclude=set())
    return [Canary(s, fmt) for s in secrets]


def plant_canaries(
    data: ClientData,
    canaries: Sequence[Canary],
    copies: int,
    seed: int,
    tokenizer: Tokenizer | None = None,
) -> ClientData:
    """Overwrite ``copies`` copies of every canary into random places of ``data.train``.

    Each block is cut into ``block_size // t`` slots of ``t`` tokens (``t`` = longest canary,
    shifted by a random per-block offset); the copies fill distinct random slots, so no copy
    overwrites another. Shapes and ``data.val`` are unchanged; the input is not modified.

    Raises
    ------
    ConfigError
        If ``copies < 1``, there are no canaries, or the train blocks lack room for all copies.
    """
    if not canaries or not isinstance(copies, int) or copies < 1:
        raise ConfigError(f"plant_canaries needs canaries and copies >= 1, got {len(canaries)}, {copies!r}")
    ids = [c.token_ids(tokenizer) for c in canaries]
    width = max(len(t) for t in ids)
    n_blocks, block_size = data.train.shape
    per_block = block_size // width
    needed = len(canaries) * copies
    if per_block * n_blocks < needed:
        raise ConfigError(
            f"{needed} canary copies of {width} tokens do not fit in {n_blocks} blocks of "
            f"{block_size}; plant fewer copies or give the client more data"
        )
    gen = torch.Generator().manual_seed(seed)
    slots = torch.randperm(n_blocks * per_block, generator=gen)[:needed]  # (needed,) slot index
    shift = torch.randint(0, block_size - per_block * width + 1, (n_blocks,), generator=gen)  # (n_blocks,)
    train = data.train.clone()
    for k, slot in enumerate(slots.tolist()):
        block, within = divmod(slot, per_block)
        start = int(shift[block]) + within * width
        tokens = ids[k % len(canaries)]
        train[block, start : start + len(tokens)] = tokens
    return replace(data, train=train)


def canary_mask(blocks: torch.Tensor, canaries: Sequence[Canary], tokenizer: Tokenizer | None = None) -> torch.Tensor:
    """Which blocks ``(n_blocks, block_size)`` contain a canary's secret tokens: bool ``(n_blocks,)``.

    Useful to split a client's train data into canary and canary-free text (e.g. for the
    embedding-recovery attack, which must not see the secrets).
    """
    found = torch.zeros(blocks.shape[0], dtype=torch.bool)
    for canary in canaries:
        _, secret = encode_parts(canary.format.prefix, [canary.secret], tokenizer)
        t = len(secret[0])
        if t > blocks.shape[1]:
            continue
        windows = blocks.unfold(1, t, 1)  # (n_blocks, block_size - t + 1, t)
        found |= (windows == secret[0].to(blocks.device)).all(-1).any(-1).cpu()
    return found


def distinct_secrets(fmt: CanaryFormat, n: int, seed: int, exclude: set[str], unique: bool = True) -> list[str]:
    """``n`` random members of ``R`` not in ``exclude`` (and, if ``unique``, pairwise distinct)."""
    gen = torch.Generator().manual_seed(seed)
    out: list[str] = []
    while len(out) < n:  # collisions in 2**40 are rare: redraw the few that happen
        for s in fmt.sample_secrets(n - len(out), gen):
            if s not in exclude:
                out.append(s)
                if unique:
                    exclude.add(s)
    return out[:n]


def encode_parts(
    prefix: str, secrets: Sequence[str], tokenizer: Tokenizer | None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Token ids of ``prefix`` ``(p,)`` and of each secret ``(s_k,)``, all long."""
    tok = tokenizer or ByteTokenizer()

    def encode(text: str) -> torch.Tensor:
        return torch.as_tensor(tok.encode(text), dtype=torch.long).flatten()

    prefix_ids = encode(prefix)
    secret_ids = [encode(s) for s in secrets]
    if len(prefix_ids) == 0 or any(len(s) == 0 for s in secret_ids):
        raise ConfigError("canary prefix and secrets must tokenize to at least one token each")
    return prefix_ids, secret_ids
