"""The one interface every ledger backend implements.

A backend only knows how to *submit* (endorse + order + commit) and *evaluate* (query)
a contract function with string arguments, exactly like a Fabric peer. Typed methods
(register a client, record a checkpoint, ...) live in :mod:`hyperfed.ledger.client` on
top of this, so they are written once and behave the same on every backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hyperfed.ledger.embedded.chain import Block, VerifyReport

__all__ = ["LedgerBackend"]


class LedgerBackend(ABC):
    """Transport to a ledger running the HyperFed contract.

    Implementations raise :class:`hyperfed.errors.LedgerUnavailableError` when the ledger
    cannot be reached, :class:`~hyperfed.errors.LedgerConflictError` on an MVCC conflict,
    and :class:`~hyperfed.errors.ContractViolationError` when the contract refuses.
    """

    @abstractmethod
    def submit(self, function: str, *args: str) -> bytes:
        """Run ``function`` as a transaction; return its payload once committed."""

    @abstractmethod
    def evaluate(self, function: str, *args: str) -> bytes:
        """Run ``function`` as a read-only query on committed state; return its payload."""

    # Optional hooks. A backend that keeps its chain in a local file the run can anchor and
    # verify (the embedded ledger) overrides them; on a Fabric network the chain is the
    # network's own, so the defaults say "nothing local to anchor or verify".
    local_file: Path | None = None

    def head(self) -> tuple[int, str] | None:
        """``(number, hash)`` of the last block, for a run to anchor; ``None``: no local chain."""
        return None

    def verify(self, *, expected_head: tuple[int, str] | None = None) -> VerifyReport | None:
        """Verify the local chain (see :meth:`EmbeddedLedger.verify`); ``None``: no local chain."""
        return None

    def blocks(self, start: int = 0) -> list[Block]:
        """Stored blocks from ``start`` on; empty when the backend keeps no local chain."""
        return []

    def close(self) -> None:  # noqa: B027  (optional: most backends hold something to release)
        """Release connections and files. Safe to call twice."""

    def __enter__(self) -> LedgerBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
