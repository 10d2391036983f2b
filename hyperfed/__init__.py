"""hyperfed: federation (Flower), unlearning, ledger and audit around the ``hypernet`` generator."""

from hyperfed.errors import (
    ContractViolationError,
    ForgottenClientError,
    HyperFedError,
    LedgerConflictError,
    LedgerError,
    LedgerUnavailableError,
    MalformedUpdateError,
    TamperDetectedError,
    UnknownClientError,
)

__all__ = [
    "HyperFedError",
    "UnknownClientError",
    "ForgottenClientError",
    "MalformedUpdateError",
    "LedgerError",
    "LedgerUnavailableError",
    "LedgerConflictError",
    "ContractViolationError",
    "TamperDetectedError",
]
