"""HyperFed's accountability ledger: one contract, several backends, one typed API.

* :class:`Ledger` — the typed API (register, record, forget, query, proofs).
* :func:`open_ledger` — a backend from a URL:

  ==========================================  =========================================
  ``/path/ledger.db`` or ``sqlite:///path``    :class:`EmbeddedLedger` (the default)
  ``sqlite://relative/ledger.db``              the same, relative to the working dir
  ``fabric+gateway://host:port/…``             Fabric Gateway client
                                               (:mod:`hyperfed.ledger.gateway`)
  ==========================================  =========================================

  Query parameters become keyword arguments of the backend, e.g.
  ``sqlite:///runs/a/ledger.db?writer_msp=Org1MSP&msp_id=Org1MSP``.
* :class:`Outbox` — durable queue for writes while the ledger is unreachable.
* :class:`SaltStore` — the secret per-client commitment salts of a run.
* :mod:`hyperfed.ledger.recorder` — :class:`~hyperfed.ledger.recorder.RunRecorder`, what
  training calls to record a run (imports torch, so it is not imported here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from hyperfed.errors import ConfigError
from hyperfed.ledger.base import LedgerBackend
from hyperfed.ledger.chain import Block, Problem, VerifyReport
from hyperfed.ledger.client import Ledger
from hyperfed.ledger.commitment import (
    adapters_root,
    commit_embedding,
    commitments_root,
    hash_file,
    sha256_hex,
    verify_commitment,
)
from hyperfed.ledger.embedded import EmbeddedLedger
from hyperfed.ledger.outbox import FlushReport, Outbox, OutboxEntry
from hyperfed.ledger.records import (
    CheckpointRecord,
    ClientHistory,
    ClientRecord,
    ForgetRecord,
    GenerationRecord,
    LedgerConfig,
    MembershipProof,
    Receipt,
    RoundRecords,
    violation_code,
)
from hyperfed.ledger.salts import SaltStore
from hyperfed.ledger.stub import Simulation

__all__ = [
    "open_ledger",
    "Ledger",
    "LedgerBackend",
    "EmbeddedLedger",
    "Simulation",
    "Outbox",
    "OutboxEntry",
    "FlushReport",
    "SaltStore",
    "Block",
    "Problem",
    "VerifyReport",
    "Receipt",
    "LedgerConfig",
    "ClientRecord",
    "CheckpointRecord",
    "GenerationRecord",
    "ForgetRecord",
    "ClientHistory",
    "RoundRecords",
    "MembershipProof",
    "violation_code",
    "commit_embedding",
    "verify_commitment",
    "commitments_root",
    "adapters_root",
    "sha256_hex",
    "hash_file",
]


def _open_sqlite(url: str, options: dict[str, Any]) -> LedgerBackend:
    parts = urlsplit(url)
    path = parts.netloc + parts.path  # "sqlite:///abs" -> "/abs", "sqlite://rel/x" -> "rel/x"
    if not path:
        raise ConfigError(f"ledger URL {url!r} names no file")
    return EmbeddedLedger(path, **{**dict(parse_qsl(parts.query)), **options})


def _open_gateway(url: str, options: dict[str, Any]) -> LedgerBackend:
    # The Fabric Gateway backend, imported lazily (grpc, TLS material); it reads every
    # setting (channel, chaincode, identity, TLS) from the URL itself.
    if options:
        raise ConfigError(f"put gateway settings in the URL, not as arguments: {sorted(options)}")
    from hyperfed.ledger.gateway import gateway_backend_from_url

    return gateway_backend_from_url(url)


# Scheme -> opener. Add a backend here with one line.
_OPENERS: dict[str, Callable[[str, dict[str, Any]], LedgerBackend]] = {
    "sqlite": _open_sqlite,
    "fabric+gateway": _open_gateway,
}


def open_ledger(url: str | Path, **options: Any) -> LedgerBackend:
    """Open the ledger backend named by ``url``.

    Parameters
    ----------
    url
        A file path or ``sqlite://`` URL (embedded ledger) or a ``fabric+gateway://`` URL.
    **options
        Keyword arguments for the backend; they override the URL's query parameters.

    Raises
    ------
    ConfigError
        Unknown scheme or a URL without a file.
    """
    text = str(url)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if not scheme:
        return EmbeddedLedger(Path(text), **options)
    opener = _OPENERS.get(scheme)
    if opener is None:
        known = ", ".join(f"{s}://" for s in _OPENERS)
        raise ConfigError(f"unknown ledger URL scheme in {text!r}; use a path or one of {known}")
    return opener(text, options)
