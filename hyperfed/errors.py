"""Typed errors of the federation, unlearning and ledger layers.

Everything derives from :class:`hypernet.errors.HyperFedError`, so a caller can catch the
whole library with one ``except``.
"""

from __future__ import annotations

from hypernet.errors import (
    CheckpointMismatchError,
    ConfigError,
    CorruptFileError,
    DuplicateClientError,
    HyperFedError,
    MalformedUpdateError,
    NoLoraTargetsError,
    UnknownClientError,
)

__all__ = [
    "HyperFedError",
    "ConfigError",
    "UnknownClientError",
    "DuplicateClientError",
    "NoLoraTargetsError",
    "CheckpointMismatchError",
    "CorruptFileError",
    "ForgottenClientError",
    "MalformedUpdateError",
    "LedgerError",
    "LedgerUnavailableError",
    "LedgerConflictError",
    "ContractViolationError",
    "TamperDetectedError",
    "MissingExtraError",
    "NotARunError",
    "RunBusyError",
    "ForgetJournalError",
    "ForgetInterruptedError",
]


class ForgottenClientError(UnknownClientError):
    """The client was forgotten; forgetting is final and the id cannot be reused."""


class LedgerError(HyperFedError):
    """Base class of ledger failures."""


class LedgerUnavailableError(LedgerError):
    """The ledger cannot be reached right now; the operation may be retried later."""


class LedgerConflictError(LedgerError):
    """An MVCC read conflict or duplicate transaction id: nothing was written; retry."""


class ContractViolationError(LedgerError):
    """The contract rejected the transaction because it breaks an invariant."""


class TamperDetectedError(LedgerError):
    """Stored ledger data or a run file does not match its hash chain or recorded hash."""


class MissingExtraError(HyperFedError, ImportError):
    """A feature needs packages of an optional extra that is not installed; the message
    names the ``pip install 'hyperfed[extra]'`` that fixes it."""


class NotARunError(ConfigError):
    """The path is not a run directory (missing, not a folder, or no ``run.json`` /
    checkpoints in it); the message names the path."""


class RunBusyError(HyperFedError):
    """Another process holds the run's lock (``RUN/.lock``): a writer (train, forget) or an
    audit reading it. Nothing was changed; retry once it has finished (the message says
    which command holds it, when known)."""


class ForgetJournalError(CorruptFileError):
    """``RUN/forget_journal.json`` cannot be completed (unparsable, not an object, missing
    keys, or naming a client or round the run never had). The message names the file and
    what to do; nothing was changed."""


class ForgetInterruptedError(HyperFedError):
    """A committed forget stopped on an operating-system error (read-only disk, full disk…).
    It is pending in ``forget_journal.json``: fix the cause, then ``hyperfed forget RUN
    --resume`` (or call ``forget_client`` again) finishes it."""
