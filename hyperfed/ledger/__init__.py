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

Torch-free: what a *run* writes and checks (recorder, fingerprints, audit) lives in
:mod:`hyperfed.rundir`; the local Gateway endpoint for tests and development in
:mod:`hyperfed.ledger.devnet`. A new backend is one module plus one line in
:data:`~hyperfed.ledger.backends.BACKENDS`.
"""

from __future__ import annotations

from hyperfed.ledger.backends import BACKENDS, open_ledger
from hyperfed.ledger.base import LedgerBackend
from hyperfed.ledger.client import Ledger
from hyperfed.ledger.commitment import (
    adapters_root,
    commit_embedding,
    commitments_root,
    hash_file,
    sha256_hex,
    verify_commitment,
)
from hyperfed.ledger.embedded import Block, EmbeddedLedger, Problem, Simulation, VerifyReport
from hyperfed.ledger.outbox import FlushReport, Outbox, OutboxEntry
from hyperfed.ledger.records import (
    CheckpointRecord,
    ClientHistory,
    ClientRecord,
    ForgetRecord,
    GenerationRecord,
    LedgerInitRecord,
    MembershipProof,
    Receipt,
    RoundRecords,
    violation_code,
)
from hyperfed.ledger.salts import SaltStore

__all__ = [
    "open_ledger",
    "BACKENDS",
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
    "LedgerInitRecord",
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
