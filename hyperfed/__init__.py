"""hyperfed: federation (Flower), unlearning, ledger and audit around the ``hypernet`` generator."""

from typing import Any

from hyperfed.errors import (
    ContractViolationError,
    ForgottenClientError,
    HyperFedError,
    LedgerConflictError,
    LedgerError,
    LedgerUnavailableError,
    MalformedUpdateError,
    MissingExtraError,
    TamperDetectedError,
    UnknownClientError,
)

__all__ = [
    "forget_client",
    "audit_run",
    "run_experiment",
    "RunConfig",
    "HyperFedError",
    "UnknownClientError",
    "ForgottenClientError",
    "MalformedUpdateError",
    "LedgerError",
    "LedgerUnavailableError",
    "LedgerConflictError",
    "ContractViolationError",
    "TamperDetectedError",
    "MissingExtraError",
]


_LAZY = {
    "forget_client": ("hyperfed.unlearning.forget", "forget_client"),
    "audit_run": ("hyperfed.rundir.audit", "audit_run"),
    "run_experiment": ("hyperfed.experiment", "run_experiment"),
    "RunConfig": ("hyperfed.config", "RunConfig"),
}


def __getattr__(name: str) -> Any:  # lazy: `import hyperfed` stays light
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'hyperfed' has no attribute {name!r}")
