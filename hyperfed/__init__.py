"""hyperfed: federation (Flower), unlearning, ledger and audit around the ``hypernet`` generator."""

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
from hypernet.lazy import lazy_attributes

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


# Lazy (PEP 562): `import hyperfed` stays light; these load on first use.
_LAZY = {
    "forget_client": "hyperfed.unlearning.forget",
    "audit_run": "hyperfed.rundir.audit",
    "run_experiment": "hyperfed.experiment",
    "RunConfig": "hyperfed.config",
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
