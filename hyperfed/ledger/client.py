"""``Ledger``: the typed ledger API the rest of HyperFed uses, on any backend.

Writes become contract transactions (through the :class:`~hyperfed.ledger.outbox.Outbox`
when one is configured, so they survive an unreachable ledger); reads are contract
queries parsed into the frozen records of :mod:`hyperfed.ledger.records`.

Hash arguments are lowercase hex sha256 strings. "Checkpoint hash" always means the hash
of the shared hypernetwork weights, i.e. a checkpoint's ``weights_hash``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hyperfed.errors import ContractViolationError, LedgerConflictError, UnknownClientError
from hyperfed.ledger.backends import open_ledger
from hyperfed.ledger.base import LedgerBackend
from hyperfed.ledger.outbox import FlushReport, Outbox
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
    from_json,
    violation_code,
)

__all__ = ["Ledger"]

log = logging.getLogger(__name__)


def _commitments(commitments: Mapping[str, str]) -> str:
    """Canonical JSON of ``{client id: commitment}`` (same record -> same outbox id)."""
    if not isinstance(commitments, Mapping):
        raise TypeError(
            f"commitments must be a mapping {{client id: commitment hex}}, not {type(commitments).__name__}"
        )
    return json.dumps({str(k): str(v) for k, v in commitments.items()}, sort_keys=True, separators=(",", ":"))


class Ledger:
    """Record and query HyperFed's accountability trail.

    Parameters
    ----------
    backend
        Any :class:`~hyperfed.ledger.base.LedgerBackend` (embedded, Fabric Gateway).
    outbox
        An :class:`Outbox`, or a path for one, to queue writes while the ledger is down.
        Without it, an unreachable ledger raises ``LedgerUnavailableError``.
    conflict_retries
        How often a write is re-run after an MVCC conflict (safe: the contract re-checks
        every invariant and treats an identical stored record as a replay).
    """

    def __init__(
        self, backend: LedgerBackend, *, outbox: Outbox | str | Path | None = None, conflict_retries: int = 3
    ) -> None:
        self.backend = backend
        if outbox is not None and not isinstance(outbox, Outbox):
            outbox = Outbox(outbox, backend, conflict_retries=conflict_retries)
        self.outbox = outbox
        self.conflict_retries = conflict_retries

    @classmethod
    def from_url(cls, url: str | Path, *, outbox: str | Path | None = None, **backend_options: Any) -> Ledger:
        """Open a backend with :func:`hyperfed.ledger.open_ledger` and wrap it."""
        return cls(open_ledger(url, **backend_options), outbox=outbox)

    # ------------------------------------------------------------------ writes

    def _submit(self, function: str, *args: str) -> Receipt:
        if self.outbox is not None:
            entry = self.outbox.submit(function, *args)
            if entry.status != "sent":
                return Receipt(function, "queued")
            payload = entry.payload or b"{}"
        else:
            for attempt in range(self.conflict_retries + 1):
                try:
                    payload = self.backend.submit(function, *args)
                    break
                except LedgerConflictError:
                    if attempt == self.conflict_retries:
                        raise
        answer = json.loads(payload)
        return Receipt(function, "committed", bool(answer.get("replayed")), answer.get("record"))

    def initialise(self, writer_msp: str) -> Receipt:
        """Submit ``init_ledger``: make ``writer_msp`` the only writer (once, from it).

        The embedded ledger does this itself when it creates its file; a Fabric channel
        needs it once after the chaincode is deployed.
        """
        return self._submit("init_ledger", writer_msp)

    def register_client(self, client_id: str, commitment: str) -> Receipt:
        """Register a client with the salted commitment to its embedding.

        See :func:`hyperfed.ledger.commitment.commit_embedding`.
        """
        return self._submit("register_client", client_id, commitment)

    def record_checkpoint(self, round: int, weights_hash: str, commitments: Mapping[str, str]) -> Receipt:
        """Record a round's shared-weights hash and its embeddings' commitments.

        Parameters
        ----------
        round
            Above the latest checkpoint's round (round 0 = the initial weights).
        weights_hash
            Hash of the *shared* hypernetwork weights (client embeddings excluded), see
            :func:`hyperfed.rundir.recorder.shared_weights_hash`.
        commitments
            ``{client id: commitment}`` of every embedding saved in this checkpoint
            (:func:`~hyperfed.ledger.commitment.commit_embedding`). Each client must be
            registered and not forgotten. The contract computes and stores the Merkle
            root (:func:`~hyperfed.ledger.commitment.commitments_root`) and the leaves.
        """
        return self._submit("record_checkpoint", str(int(round)), weights_hash, _commitments(commitments))

    def record_generation(self, round: int, client_id: str, adapter_hash: str, checkpoint_hash: str) -> Receipt:
        """Record the hash of the adapter generated for ``client_id`` in ``round``.

        ``checkpoint_hash`` is the weights hash of a recorded checkpoint (record the
        initial weights as round 0 before the first round).
        """
        return self._submit("record_generation", str(int(round)), client_id, adapter_hash, checkpoint_hash)

    def record_forget(
        self,
        client_id: str,
        round: int,
        new_checkpoint_hash: str,
        commitments: Mapping[str, str],
        adapters_root: str,
        mode: str,
        guarantee: Mapping[str, Any],
    ) -> Receipt:
        """Record that ``client_id`` was forgotten (final) and the resulting checkpoint.

        Parameters
        ----------
        round
            The current round; the new checkpoint becomes ``(round, latest version + 1)``.
        new_checkpoint_hash
            Shared-weights hash after the forget.
        commitments
            ``{client id: commitment}`` of the remaining clients' embeddings in the new
            checkpoint (without ``client_id``).
        adapters_root
            :func:`~hyperfed.ledger.commitment.adapters_root` of the regenerated adapters.
        mode
            How it was forgotten, e.g. ``"delete"`` or ``"exact"``.
        guarantee
            What the forget guarantees (:func:`hyperfed.federation.privacy.forget_guarantee`:
            ``policy``, ``guarantee``, ``epsilon``, ``delta``, ``text``), recorded with it.
        """
        return self._submit(
            "record_forget",
            client_id,
            str(int(round)),
            new_checkpoint_hash,
            _commitments(commitments),
            adapters_root,
            mode,
            json.dumps(dict(guarantee), sort_keys=True, allow_nan=False, ensure_ascii=False),
        )

    def flush(self) -> FlushReport | None:
        """Send queued writes now (``None`` without an outbox)."""
        return None if self.outbox is None else self.outbox.flush()

    # ----------------------------------------------------------------- queries

    def record_checkpoint_files(self, round: int, weights_hash: str, files: Mapping[str, str]) -> Receipt:
        """Record the digests of a checkpoint's other files (``{part: sha256}``: its generator
        config, its optimizer state), keyed by its round and shared-weights hash. A part once
        recorded never changes; a later record may add parts (a subset is a replay)."""
        body = json.dumps(dict(sorted(files.items())), separators=(",", ":"), ensure_ascii=False)
        return self._submit("record_checkpoint_files", str(int(round)), weights_hash, body)

    def checkpoint_files(self) -> dict[tuple[int, str], dict[str, str]]:
        """``{(round, weights hash): {part: sha256}}`` of every :meth:`record_checkpoint_files`."""
        return {
            (int(r["round"]), str(r["weights_hash"])): dict(r["files"]) for r in self._query("list_checkpoint_files")
        }

    def _query(self, function: str, *args: str) -> Any:
        return json.loads(self.backend.evaluate(function, *args))

    def config(self) -> LedgerInitRecord:
        """Who may write, and since which transaction."""
        return from_json(LedgerInitRecord, self._query("get_config"))

    def get_client(self, client_id: str) -> ClientRecord:
        """A client's record (also for forgotten clients: see ``.forgotten``).

        Raises
        ------
        UnknownClientError
            The id was never registered.
        """
        try:
            return from_json(ClientRecord, self._query("get_client", client_id))
        except ContractViolationError as exc:
            if violation_code(exc) == "unknown-client":
                raise UnknownClientError(f"client {client_id!r} is not on the ledger") from exc
            raise

    def list_clients(self) -> list[ClientRecord]:
        return [from_json(ClientRecord, c) for c in self._query("list_clients")]

    def client_history(self, client_id: str) -> ClientHistory:
        """Record changes (newest first), generations and forget event of one client."""
        try:
            return ClientHistory.from_json(self._query("get_client_history", client_id))
        except ContractViolationError as exc:
            if violation_code(exc) == "unknown-client":
                raise UnknownClientError(f"client {client_id!r} is not on the ledger") from exc
            raise

    def round_records(self, round: int) -> RoundRecords:
        """Every checkpoint version and generation of ``round``."""
        return RoundRecords.from_json(self._query("get_round", str(int(round))))

    def get_checkpoint(self, round: int, version: int | None = None) -> CheckpointRecord:
        """Checkpoint ``(round, version)``; the round's latest version when ``None``."""
        v = -1 if version is None else int(version)
        return from_json(CheckpointRecord, self._query("get_checkpoint", str(int(round)), str(v)))

    def latest_checkpoint(self) -> CheckpointRecord | None:
        data = self._query("get_latest_checkpoint")
        return None if data is None else from_json(CheckpointRecord, data)

    def list_checkpoints(self) -> list[CheckpointRecord]:
        return [from_json(CheckpointRecord, c) for c in self._query("list_checkpoints")]

    def list_generations(self) -> list[GenerationRecord]:
        """Every generation, in (round, client id) order (the latest per key)."""
        return [from_json(GenerationRecord, g) for g in self._query("list_generations")]

    def forget_events(self) -> list[ForgetRecord]:
        return [from_json(ForgetRecord, f) for f in self._query("list_forgets")]

    def membership_proof(self, client_id: str, round: int, version: int | None = None) -> MembershipProof:
        """Proof that the client's commitment is in checkpoint ``(round, version)``'s root."""
        v = -1 if version is None else int(version)
        data = self._query("get_membership_proof", client_id, str(int(round)), str(v))
        return from_json(MembershipProof, data)

    def checkpoint_commitments(self, round: int, version: int | None = None) -> dict[str, str]:
        """``{client id: commitment}`` of checkpoint ``(round, version)`` (latest if ``None``).

        The contract re-checks the stored leaves against the checkpoint's Merkle root.
        """
        v = -1 if version is None else int(version)
        data = self._query("get_checkpoint_commitments", str(int(round)), str(v))
        return dict(data["commitments"])

    # --------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Close the outbox and the backend. Safe to call twice."""
        if self.outbox is not None:
            self.outbox.close()
        self.backend.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
