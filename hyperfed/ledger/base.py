"""The one interface every ledger backend implements.

A backend only knows how to *submit* (endorse + order + commit) and *evaluate* (query)
a contract function with string arguments, exactly like a Fabric peer. Typed methods
(register a client, record a checkpoint, ...) live in :mod:`hyperfed.ledger.client` on
top of this, so they are written once and behave the same on every backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

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

    def close(self) -> None:
        """Release connections and files. Safe to call twice."""

    def __enter__(self) -> "LedgerBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
