"""Client sampling that makes exact unlearning possible.

Each client's participation in round *t* is an independent coin flip decided by
``sha256(seed, round, client_id)`` (Poisson sampling). Removing a client therefore never
changes who *else* was sampled in any round, so "roll back to before the client's first
round and replay without it" reproduces a run that never had the client. Sampling "k of
the available clients" would not: every later round's draw would change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from hypernet.errors import ConfigError

__all__ = ["participates", "poisson_sample"]


def _uniform(seed: int, round_: int, client_id: str) -> float:
    digest = hashlib.sha256(f"hyperfed-sample\x00{seed}\x00{round_}\x00{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def participates(seed: int, round_: int, client_id: str, rate: float) -> bool:
    """Whether ``client_id`` takes part in ``round_`` (probability ``rate``)."""
    if not 0.0 < rate <= 1.0:
        raise ConfigError(f"sample rate must be in (0, 1], got {rate!r}")
    return rate == 1.0 or _uniform(seed, round_, client_id) < rate


def poisson_sample(seed: int, round_: int, client_ids: Iterable[str], rate: float) -> list[str]:
    """The clients of ``client_ids`` that take part in ``round_``, in the given order."""
    return [cid for cid in client_ids if participates(seed, round_, cid, rate)]
