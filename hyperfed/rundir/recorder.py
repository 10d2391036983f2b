"""``RunRecorder``: what training calls so the ledger gets every registration, checkpoint
and generation of a run — and the run directory gets the files they describe. Each
checkpoint record is followed by a ``record_checkpoint_files`` record: the digests of its
generator config and optimizer state (what its shared-weights hash does not cover).

Driver-agnostic: the plain loop and the Flower strategy call the same four methods::

    recorder = RunRecorder.open(run_dir)              # embedded ledger + outbox in RUN/
    recorder.record_checkpoint(0, server.hypernet, server.trainer)   # initial weights; registers
    for round_ in rounds:                             # the clients known so far
        outcome = ...                                 # the server's RoundOutcome (what it sent)
        recorder.record_round(outcome, server.hypernet, server.trainer)  # late joiners too
    recorder.close()                                  # flush, anchor the ledger head

``recorder.round_callback(server)`` is :meth:`RunRecorder.record_round` as the callback of
the plain loop (``run_rounds(callback=...)``) and of the Flower strategy (``on_round=``).

Every write goes through the ledger's :class:`~hyperfed.ledger.outbox.Outbox`: when the
ledger is unreachable the records wait in ``outbox.db`` and are sent, in order and once
each, on the next write, :meth:`RunRecorder.flush` or the next run that opens the outbox.
Files are written *before* their record is queued, and a client's salt before its
commitment, so a crash never leaves a record that the run directory cannot back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hypernet import HyperLoRA

if TYPE_CHECKING:  # only for annotations: the trainer pulls peft
    from hypernet import HypernetTrainer

from hyperfed.errors import ConfigError, ContractViolationError, ForgottenClientError, LedgerError
from hyperfed.ledger.client import Ledger
from hyperfed.ledger.commitment import adapters_root, commit_embedding
from hyperfed.ledger.embedded import EmbeddedLedger
from hyperfed.ledger.outbox import FlushReport, OutboxEntry
from hyperfed.ledger.records import DEFAULT_WRITER_MSP, Receipt, violation_code
from hyperfed.ledger.salts import SaltStore
from hyperfed.rundir import RunDirectory
from hyperfed.rundir.fingerprints import (
    POLICY_KEY,
    checkpoint_file_digests,
    embedding_bytes,
    embedding_commitment,
    read_checkpoint_tensors,
    run_policy,
    shared_weights_hash,
)

__all__ = [
    "RunRecorder",
    "shared_weights_hash",
    "DEFAULT_WRITER_MSP",
    "LEDGER_URL_KEY",
    "IDENTITY_KEY",
    "ledger_url_of",
    "ledger_identity_of",
]

log = logging.getLogger(__name__)

LEDGER_URL_KEY = "url"  # run.json: {"ledger": {"url": ...}} names a non-default ledger
IDENTITY_KEY = "identity"  # run.json: {"ledger": {"identity": folder}} the writer's signing key


def _ledger_setting(run_dir: RunDirectory, key: str) -> str | None:
    config = run_dir.read_json(run_dir.config_path, default={})
    section = config.get("ledger") if isinstance(config, dict) else None
    value = section.get(key) if isinstance(section, dict) else None
    return str(value) if value else None


def ledger_url_of(run_dir: RunDirectory) -> str | None:
    """The ledger URL recorded in ``run.json`` (``None``: the embedded ``ledger.db``)."""
    return _ledger_setting(run_dir, LEDGER_URL_KEY)


def ledger_identity_of(run_dir: RunDirectory) -> str | None:
    """The writer identity folder named in ``run.json`` (``None``: the per-user dev identity)."""
    return _ledger_setting(run_dir, IDENTITY_KEY)


def _outside_run(run_dir: RunDirectory, identity: str) -> str:
    """``identity`` — refused if it lies inside the run directory, where a copy of the
    folder would hand out the key that signs its ledger."""
    folder, root = Path(identity).expanduser().resolve(), run_dir.root.resolve()
    if folder == root or root in folder.parents:
        raise ConfigError(
            f"the ledger identity {identity} lies inside the run directory {run_dir.root}: "
            "whoever copies the run could re-sign its ledger; keep the key elsewhere"
        )
    return identity


class RunRecorder:
    """Record a run on the ledger and save the files the records describe.

    Parameters
    ----------
    run_dir
        Where checkpoints, adapters, salts and ``ledger_head.json`` go.
    ledger
        The ledger. Without an outbox, one is added at ``run_dir.outbox_path``.
    close_ledger
        Close the ledger (backend included) in :meth:`close`; :meth:`open` sets it.
    """

    def __init__(self, run_dir: RunDirectory, ledger: Ledger, *, close_ledger: bool = False) -> None:
        self.run_dir = run_dir
        self._own_outbox = ledger.outbox is None
        if self._own_outbox:
            ledger = Ledger(ledger.backend, outbox=run_dir.outbox_path, conflict_retries=ledger.conflict_retries)
        self.ledger = ledger
        self.salts = SaltStore(run_dir.salts_path)
        self._close_ledger = close_ledger
        self._registered: set[str] = set()
        self._weights: dict[int, str] = {}  # round -> shared-weights hash recorded for it
        self._closed = False

    @classmethod
    def open(
        cls,
        run_dir: RunDirectory | str | os.PathLike,
        ledger_url: str | None = None,
        *,
        writer_msp: str = DEFAULT_WRITER_MSP,
        identity: str | None = None,
    ) -> RunRecorder:
        """The recorder of a run directory, with its ledger and outbox.

        Parameters
        ----------
        run_dir
            The run directory (or its path).
        ledger_url
            A ledger URL (:func:`hyperfed.ledger.open_ledger`); it is kept in ``run.json``
            as ``ledger.url`` so the audit finds it. ``None``: the URL already in
            ``run.json``, else the embedded ledger at ``run_dir.ledger_path``.
        writer_msp
            The MSP that writes. An embedded ledger names it in its block 0; any other
            ledger gets ``init_ledger(writer_msp)`` once (a replay afterwards).
        identity
            Folder of the writer's signing identity for the embedded ledger (see
            :class:`~hyperfed.config.LedgerSettings`); ``None``: ``ledger.identity`` of
            ``run.json``, else the per-user dev identity. Refused inside the run directory.
        """
        run_dir = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
        url = ledger_url or ledger_url_of(run_dir)
        if url is None:
            folder = identity or ledger_identity_of(run_dir)
            backend = EmbeddedLedger(
                run_dir.ledger_path,
                writer_msp=writer_msp,
                msp_id=writer_msp,
                identity=_outside_run(run_dir, folder) if folder else None,
            )
            ledger = Ledger(backend, outbox=run_dir.outbox_path)
        else:
            if ledger_url is not None and ledger_url_of(run_dir) != ledger_url:
                config = run_dir.read_json(run_dir.config_path, default={})
                section = config.get("ledger") if isinstance(config.get("ledger"), dict) else {}
                run_dir.write_json(run_dir.config_path, {**config, "ledger": {**section, LEDGER_URL_KEY: ledger_url}})
            ledger = Ledger.from_url(url, outbox=run_dir.outbox_path)
            ledger.initialise(writer_msp)
        return cls(run_dir, ledger, close_ledger=True)

    # ----------------------------------------------------------------- writes

    def register_clients(self, client_ids: Iterable[str], hypernet: HyperLoRA) -> list[Receipt]:
        """Register clients with a salted commitment to their current embedding.

        A client that already has a salt is registered again with the same commitment:
        the outbox or the contract treats it as a replay, so this is safe to repeat.

        Raises
        ------
        UnknownClientError
            A client id is not in ``hypernet``.
        ForgottenClientError
            The ledger says the client was forgotten (its new salt is destroyed again).
        """
        receipts = []
        for cid in client_ids:
            entry = self.salts.get(cid)
            if entry is None:
                vector = hypernet.clients.parameter(cid)
                salt, commitment = commit_embedding(embedding_bytes(vector))
                entry = self.salts.add(cid, salt, commitment)  # durable before it is sent
            try:
                receipts.append(self.ledger.register_client(cid, entry.registration))
            except ContractViolationError as exc:
                if violation_code(exc) == "forgotten-client":
                    self.salts.destroy(cid)
                    raise ForgottenClientError(
                        f"client {cid!r} was forgotten; forgetting is final, use a new id"
                    ) from exc
                raise
            self._registered.add(cid)
        return receipts

    def commitments(self, hypernet: HyperLoRA) -> dict[str, str]:
        """``{client id: commitment}`` of every embedding in ``hypernet`` now."""
        out = {}
        for cid in hypernet.client_ids:
            salt = self.salts.salt(cid)
            if salt is None:
                raise ConfigError(
                    f"client {cid!r} has no salt in {self.salts.path}: register it (register_clients) first"
                )
            out[cid] = embedding_commitment(hypernet.clients.parameter(cid), salt)
        return out

    def record_checkpoint(self, round: int, hypernet: HyperLoRA, trainer: HypernetTrainer | None = None) -> Receipt:
        """Save ``checkpoints/round-NNNN/`` and record its weights hash and commitments.

        Round 0 is the initial hypernetwork, recorded before the first generation.
        Clients of ``hypernet`` not registered yet (late joiners) are registered first.
        """
        self.register_clients([c for c in hypernet.client_ids if c not in self._registered], hypernet)
        policy = run_policy(self.run_dir.read_json(self.run_dir.config_path, default={}))
        self.run_dir.save_checkpoint(round, hypernet, trainer, extra={POLICY_KEY: policy})
        weights = shared_weights_hash(hypernet)
        receipt = self.ledger.record_checkpoint(round, weights, self.commitments(hypernet))
        self._weights[round] = weights
        self.record_checkpoint_files(round, weights)
        self.write_ledger_head()
        log.info("recorded checkpoint of round %d (%s, %d clients)", round, receipt.status, len(hypernet.client_ids))
        return receipt

    def checkpoint_hash(self, round: int) -> str:
        """Shared-weights hash of the checkpoint of ``round`` (recorded now, or read from disk)."""
        if round not in self._weights:
            folder = self.run_dir.checkpoint_dir(round)
            self._weights[round] = read_checkpoint_tensors(folder).shared_hash
        return self._weights[round]

    def record_generations(
        self, round: int, adapters: Mapping[str, Mapping[str, torch.Tensor]], checkpoint_round: int
    ) -> list[Receipt]:
        """Save each client's adapter of ``round`` and record its hash.

        Parameters
        ----------
        round
            The round the adapters were sent in.
        adapters
            ``{client id: adapter}`` as generated (e.g. ``server.configure_round``'s result).
        checkpoint_round
            The checkpoint they were generated from (``round - 1`` when every round is
            checkpointed); it must have been recorded.
        """
        weights = self.checkpoint_hash(checkpoint_round)
        receipts = []
        for cid in sorted(adapters):
            digest = self.run_dir.save_adapter(round, cid, dict(adapters[cid]))
            receipts.append(self.ledger.record_generation(round, cid, digest, weights))
        log.info("recorded %d generations of round %d", len(receipts), round)
        return receipts

    def record_forget(
        self,
        client_id: str,
        round: int,
        hypernet: HyperLoRA,
        adapter_hashes: Mapping[str, str],
        mode: str,
        guarantee: Mapping[str, Any],
    ) -> Receipt:
        """Record that ``client_id`` was forgotten, with the new checkpoint and adapters.

        Call it once ``hypernet`` no longer holds the client and the regenerated adapters
        are saved; ``adapter_hashes`` are their hashes (``RunDirectory.save_adapter``);
        ``guarantee`` what the forget guarantees (recorded with the event).
        Destroying the client's salt and purging its files is the caller's job.
        """
        if client_id in hypernet.clients:
            raise ConfigError(
                f"remove client {client_id!r} from the hypernetwork before recording that it was forgotten"
            )
        weights = shared_weights_hash(hypernet)
        receipt = self.ledger.record_forget(
            client_id, round, weights, self.commitments(hypernet), adapters_root(adapter_hashes), mode, guarantee
        )
        self._weights[round] = weights
        self._registered.discard(client_id)
        self.record_checkpoint_files(round, weights)
        self.write_ledger_head()
        return receipt

    def record_checkpoint_files(self, round: int, weights_hash: str) -> Receipt:
        """Record the digests of ``checkpoints/round-NNNN/``'s config and optimizer state
        (:func:`~hyperfed.rundir.fingerprints.checkpoint_file_digests`), which the shared
        weights hash does not cover. Called by :meth:`record_checkpoint` and :meth:`record_forget`."""
        files = checkpoint_file_digests(self.run_dir.checkpoint_dir(round))
        return self.ledger.record_checkpoint_files(round, weights_hash, files)

    def record_round(self, outcome: Any, hypernet: HyperLoRA, trainer: HypernetTrainer | None = None) -> None:
        """Record one finished round — the one function both engines call.

        Registers clients that joined since the last record (late joiners), saves and
        records the adapters the round sent (``outcome.sent``, generated from the previous
        round's checkpoint), then saves and records the new checkpoint.
        """
        new = [c for c in hypernet.client_ids if c not in self._registered]
        if new:
            self.register_clients(new, hypernet)
        self.record_generations(outcome.round, outcome.sent, checkpoint_round=outcome.round - 1)
        self.record_checkpoint(outcome.round, hypernet, trainer)

    def round_callback(self, server: Any) -> Callable[[Any], None]:
        """:meth:`record_round` as a per-round callback for a HyperLoRA server (the plain
        loop's ``callback=`` or the Flower strategy's ``on_round=``)."""
        return lambda outcome: self.record_round(outcome, server.hypernet, server.trainer)

    # ---------------------------------------------------------- delivery state

    def flush(self) -> FlushReport | None:
        """Send the records waiting in the outbox now (in order)."""
        report = self.ledger.flush()
        if report is not None and report.rejected:
            for entry in report.rejected:
                log.error("the ledger refused %s %s: %s", entry.function, entry.args[:2], entry.error)
        self.write_ledger_head()
        return report

    def pending(self) -> int:
        """Records waiting in the outbox for the ledger to come back."""
        return 0 if self.ledger.outbox is None else self.ledger.outbox.pending_count()

    def rejected(self) -> list[OutboxEntry]:
        """Records the contract refused (they are never retried)."""
        return [] if self.ledger.outbox is None else self.ledger.outbox.entries("rejected")

    def write_ledger_head(self) -> tuple[int, str] | None:
        """Anchor the embedded ledger: write its last block ``(number, hash)`` to
        ``ledger_head.json`` (:meth:`EmbeddedLedger.verify` ``expected_head``).

        Other backends keep their own chain; nothing is written for them.
        """
        backend = self.ledger.backend
        try:
            head = backend.head()  # None: the backend keeps no local chain to anchor
        except LedgerError as exc:  # busy or closed: the next write anchors it
            log.warning("could not read the ledger head of %r: %s", backend, exc)
            return None
        if head is not None:
            self.run_dir.write_json(self.run_dir.ledger_head_path, {"number": head[0], "hash": head[1]})
        return head

    def close(self) -> None:
        """Flush, anchor the ledger head, and close what this recorder opened. Idempotent."""
        if self._closed:
            return
        self._closed = True
        report = self.flush()
        if report is not None and report.pending:
            log.warning(
                "%d ledger records wait in %s; the next RunRecorder of this run sends them",
                report.pending,
                self.run_dir.outbox_path,
            )
        if self._close_ledger:
            self.ledger.close()
        elif self._own_outbox and self.ledger.outbox is not None:
            self.ledger.outbox.close()

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
