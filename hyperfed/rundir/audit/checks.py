"""``hyperfed audit RUN_DIR``: recompute every hash from the files of a run and check it
against the ledger and its hash chain.

What is checked (each check yields :class:`~hyperfed.rundir.audit.report.Finding` rows):

1. **ledger** — the embedded ledger's hash chain, block signatures, state and history
   index replay (:meth:`EmbeddedLedger.verify`), pinned to ``ledger_head.json``. Signatures
   are checked against ``trusted_cert`` (the writer's certificate as the auditor knows it)
   or, without one, against the certificate the file records — internal consistency only,
   which a note says. The file is copied (read, never opened in place), so the audit never
   writes to the run, not even SQLite's ``-shm`` index. A non-embedded ledger
   (``"ledger_url"`` in ``run.json``, or ``ledger=``) is read through the :class:`Ledger`
   API only, with a note that its chain is the network's to verify.
2. **checkpoint** — the shared-weights hash of each ``checkpoints/round-NNNN/`` against the
   ledger's checkpoint of that round (its latest version, or ``extra.version`` of
   ``hypernet.json``).
3. **embedding** — each client's embedding in each checkpoint, committed with its salt,
   against the ledger through a Merkle membership proof of that client's leaf under the
   checkpoint's on-chain root — so a purged client (embedding and salt destroyed) does not
   stop the others from verifying.
4. **adapter** — every ``adapters/round-NNNN/<client>.safetensors`` against its generation
   record, and every generation record against a file.
5. **client / salt** — who was forgotten (forget events); a forgotten client must have no
   embedding or optimizer state in any checkpoint, no salt and no adapter file; every
   active client must have a salt.
6. **outbox** — records still waiting for the ledger, or refused by it (:mod:`~hyperfed.rundir.audit.ledger_view`,
   which also opens the ledger from private copies of its files).
7. **policy** — under the ``frozen`` shared-weight policy, every checkpoint carries the shared
   hash committed with the first one (:mod:`~hyperfed.rundir.audit.policy`).
8. **stray / forget / metrics / checkpoint files** (:mod:`~hyperfed.rundir.audit.files`) —
   anything outside the layout, a pending forget (reported, never finished here),
   ``metrics.json``, each checkpoint's metadata, loadability, config and optimizer digests.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from hyperfed.errors import CorruptFileError, HyperFedError
from hyperfed.ledger.base import LedgerBackend
from hyperfed.ledger.client import Ledger
from hyperfed.ledger.embedded import EmbeddedLedger
from hyperfed.ledger.records import CheckpointRecord
from hyperfed.ledger.salts import SaltStore
from hyperfed.rundir import OPTIMIZER_FILE, RunDirectory
from hyperfed.rundir.audit.files import check_checkpoint_files, check_layout, check_metrics, check_pending_forget
from hyperfed.rundir.audit.forgets import check_regenerated_adapters
from hyperfed.rundir.audit.ledger_view import audited_ledger, check_outbox
from hyperfed.rundir.audit.policy import check_shared_policy
from hyperfed.rundir.audit.report import AuditReport, Finding
from hyperfed.rundir.fingerprints import (
    embedding_commitment,
    optimizer_clients,
    read_checkpoint_tensors,
)
from hyperfed.rundir.lock import read_view
from hyperfed.rundir.recorder import ledger_url_of
from hypernet import adapter_hash
from hypernet.io import HYPERNET_META, HYPERNET_WEIGHTS, read_meta

__all__ = ["audit_run"]

log = logging.getLogger(__name__)

_MISSING_KINDS = {"missing-block", "chain-truncated", "state-deleted", "history-deleted"}
_READ_ERRORS = (HyperFedError, KeyError, TypeError, ValueError)


class AuditContext:
    """One audit: collects findings while it walks the run directory and the ledger."""

    def __init__(self, run_dir: RunDirectory, trusted_cert: Any = None) -> None:
        self.run_dir = run_dir
        self.trusted_cert = trusted_cert
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.active: set[str] = set()  # registered, not forgotten (check_clients)
        self.files: dict[tuple[int, str], dict[str, str]] | None = None  # record_checkpoint_files
        self.block_of: dict[str, int] = {}  # tx id -> block number (embedded ledgers)

    # --------------------------------------------------------------- helpers
    def add(self, check: str, status: str, culprit: str | Path, message: str) -> None:
        if isinstance(culprit, Path):
            culprit = self.rel(culprit)
        self.findings.append(Finding(check, status, culprit, message))

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.run_dir.root).as_posix()
        except ValueError:
            return str(path)

    def where(self, tx_id: str) -> str:
        """``block N`` for a transaction on the embedded ledger, else ``tx <id>``."""
        number = self.block_of.get(tx_id)
        return f"block {number}" if number is not None else f"tx {tx_id[:12]}"

    def query(self, what: str, call: Callable[[], Any], default: Any) -> Any:
        """A ledger read; a refusal or an unreadable answer becomes a finding."""
        try:
            return call()
        except _READ_ERRORS as exc:
            self.add("ledger", "mismatch", f"ledger: {what}", f"cannot be read: {exc}")
            return default

    # ---------------------------------------------------------------- ledger
    def verify_chain(self, backend: LedgerBackend, label: str) -> bool:
        """Verify a backend's local chain against ``ledger_head.json``; ``False`` if the
        backend keeps none (a Fabric network verifies its own chain)."""
        if backend.local_file is None:
            return False
        head_path = self.run_dir.ledger_head_path
        anchor = None
        if not head_path.exists():
            self.add(
                "ledger",
                "missing",
                head_path,
                "no ledger head anchor: a truncated chain would go unnoticed (RunRecorder.close() writes it)",
            )
        else:
            try:
                data = self.run_dir.read_json(head_path)
                anchor = (int(data["number"]), str(data["hash"]))
            except (CorruptFileError, KeyError, TypeError, ValueError) as exc:
                self.add("ledger", "mismatch", head_path, f"unreadable anchor: {exc}")
        if isinstance(backend, EmbeddedLedger):
            report = backend.verify(expected_head=anchor, trusted_cert=self.trusted_cert)
        else:
            report = backend.verify(expected_head=anchor)
        if report is None:
            return False
        self.note_signatures(report.signer, report.unsigned)
        self.block_of = {b.tx_id: b.number for b in backend.blocks()}
        for problem in report.problems:
            status = "missing" if problem.kind in _MISSING_KINDS else "mismatch"
            self.add("ledger", status, f"{label}: {problem.location}", f"{problem.kind}: {problem.detail}")
        if report.ok:
            pinned = f", anchored at block {anchor[0]}" if anchor else ""
            self.add("ledger", "match", label, f"{report.blocks} blocks: hash chain, state and history replay{pinned}")
        return True

    def note_signatures(self, signer: str, unsigned: int) -> None:
        """Say plainly what the block signatures prove."""
        if self.trusted_cert is not None:
            self.notes.append(f"block signatures verified against the {signer}: nobody without its key wrote them")
        elif signer:
            self.notes.append(
                f"no trusted certificate given: block signatures were checked against the {signer} "
                "that the ledger file itself holds, which proves internal consistency only (whoever "
                "rewrites the file can replace it); pass --trust-cert WRITER-CERT.pem to prove who wrote it"
            )
        if unsigned:
            self.notes.append(f"{unsigned} blocks carry no signature (written before the ledger signed its blocks)")

    # ----------------------------------------------------------- checkpoints
    def check_checkpoints(self, ledger: Ledger, forgotten: set[str], salts: dict[str, bytes]) -> None:
        records = self.query("list_checkpoints", ledger.list_checkpoints, [])
        self.files = self.query("list_checkpoint_files", ledger.checkpoint_files, {}) or None
        if self.files is None and records:
            self.notes.append(
                "the ledger records no checkpoint file digests (a run recorded before them): checkpoint "
                "configs and optimizer files were checked for readability only"
            )
        by_round: dict[int, dict[int, CheckpointRecord]] = defaultdict(dict)
        for ckpt in records:
            by_round[ckpt.round][ckpt.version] = ckpt
        for round_ in sorted(set(by_round) | set(self.run_dir.checkpoint_rounds())):
            folder = self.run_dir.checkpoint_dir(round_)
            if round_ not in by_round:
                self.add(
                    "checkpoint",
                    "missing",
                    f"ledger: checkpoint of round {round_}",
                    f"{self.rel(folder)} was never recorded (still in the outbox?)",
                )
            elif not folder.is_dir():
                self.add(
                    "checkpoint",
                    "missing",
                    folder,
                    f"recorded in {self.where(by_round[round_][max(by_round[round_])].tx_id)} but the folder is gone",
                )
            else:
                self.check_checkpoint(ledger, folder, by_round[round_], forgotten, salts)

    def check_checkpoint(
        self,
        ledger: Ledger,
        folder: Path,
        versions: dict[int, CheckpointRecord],
        forgotten: set[str],
        salts: dict[str, bytes],
    ) -> None:
        weights = folder / HYPERNET_WEIGHTS
        try:
            meta = read_meta(folder)
        except CorruptFileError as exc:
            self.add("checkpoint", "mismatch", folder / HYPERNET_META, f"unreadable: {exc}")
            return
        try:
            wanted = meta.get("extra", {}).get("version")
            ckpt = versions[int(wanted)] if wanted is not None else versions[max(versions)]
            files = read_checkpoint_tensors(folder, also_look_for=sorted(forgotten))
        except (CorruptFileError, KeyError, TypeError, ValueError) as exc:
            self.add("checkpoint", "mismatch", weights, f"unreadable or unrecorded version: {exc}")
            return
        recorded = f"checkpoint ({ckpt.round}, {ckpt.version}) in {self.where(ckpt.tx_id)}"
        actual = files.shared_hash
        if files.missing_shared or files.unexpected:
            self.add(
                "checkpoint",
                "mismatch",
                weights,
                f"tensors missing {list(files.missing_shared)[:3]} / unexpected {list(files.unexpected)[:3]}",
            )
        elif actual != ckpt.weights_hash:
            self.add(
                "checkpoint",
                "mismatch",
                weights,
                f"shared weights hash {actual[:16]}… ≠ {ckpt.weights_hash[:16]}… of {recorded}",
            )
        else:
            self.add("checkpoint", "match", weights, f"shared weights hash = {recorded}")
        for cid in sorted(forgotten & set(files.embeddings)):
            self.add("embedding", "mismatch", weights, f"forgotten client {cid!r} still has an embedding here")
        try:
            leftover = forgotten & optimizer_clients(folder)
        except CorruptFileError as exc:  # named once more by check_checkpoint_files
            self.add("checkpoint", "mismatch", folder / OPTIMIZER_FILE, str(exc))
            leftover = set()
        if leftover:
            self.add(
                "embedding",
                "mismatch",
                folder / OPTIMIZER_FILE,
                f"forgotten client(s) {sorted(leftover)} still have optimizer state here",
            )
        for cid in sorted(set(files.embeddings) - set(ckpt.client_ids) - forgotten):
            self.add("embedding", "mismatch", weights, f"embedding of {cid!r} is not committed in {recorded}")
        for cid in ckpt.client_ids:
            if cid in forgotten or cid not in salts:
                continue  # reported once per client by check_clients
            if cid not in files.embeddings:
                self.add("embedding", "missing", weights, f"no embedding of {cid!r}, which {recorded} commits to")
                continue
            self.check_embedding(ledger, weights, ckpt, cid, files.embeddings[cid], salts[cid])
        check_checkpoint_files(self, folder, ckpt, self.files, forgotten)

    def check_embedding(
        self, ledger: Ledger, weights: Path, ckpt: CheckpointRecord, cid: str, vector: Any, salt: bytes
    ) -> None:
        what = f"membership proof of {cid!r} in checkpoint ({ckpt.round}, {ckpt.version})"
        proof = self.query(what, lambda: ledger.membership_proof(cid, ckpt.round, ckpt.version), None)
        if proof is None:
            return
        commitment = embedding_commitment(vector, salt)
        if proof.commitment != commitment:
            self.add(
                "embedding",
                "mismatch",
                weights,
                f"embedding of {cid!r} does not open its commitment in checkpoint "
                f"({ckpt.round}, {ckpt.version}) ({self.where(ckpt.tx_id)})",
            )
        elif not proof.verify(expected_root=ckpt.merkle_root):
            self.add(
                "embedding",
                "mismatch",
                f"ledger: {self.where(ckpt.tx_id)}",
                f"{what} does not verify against the checkpoint's Merkle root",
            )
        else:
            self.add(
                "embedding",
                "match",
                weights,
                f"{cid!r} opens its commitment; its {len(proof.path)}-node proof over "
                f"{proof.size} leaves verifies against the on-chain root",
            )

    # -------------------------------------------------------------- adapters
    def check_adapters(self, ledger: Ledger, forgotten: set[str]) -> None:
        records = {(g.round, g.client_id): g for g in self.query("list_generations", ledger.list_generations, [])}
        rd = self.run_dir
        on_disk = {(r, c) for r in rd.adapter_rounds() for c in rd.adapter_clients(r)}
        for round_, cid in sorted(set(records) | on_disk):
            path = self.run_dir.adapter_path(round_, cid)
            record = records.get((round_, cid))
            if cid in forgotten:
                if (round_, cid) in on_disk:
                    self.add("adapter", "mismatch", path, f"adapter of forgotten client {cid!r} is still on disk")
            elif record is None:
                self.add(
                    "adapter",
                    "missing",
                    f"ledger: generation ({round_}, {cid!r})",
                    f"{self.rel(path)} was never recorded (still in the outbox?)",
                )
            elif (round_, cid) not in on_disk:
                self.add("adapter", "missing", path, f"recorded in {self.where(record.tx_id)} but the file is gone")
            else:
                try:
                    actual = adapter_hash(load_file(path))
                except (SafetensorError, OSError) as exc:
                    self.add("adapter", "mismatch", path, f"unreadable: {exc}")
                    continue
                if actual == record.adapter_hash:
                    self.add("adapter", "match", path, f"hash = generation record in {self.where(record.tx_id)}")
                else:
                    self.add(
                        "adapter",
                        "mismatch",
                        path,
                        f"hash {actual[:16]}… ≠ {record.adapter_hash[:16]}… recorded in {self.where(record.tx_id)}",
                    )

    # ------------------------------------------------------- clients, salts
    def read_salts(self) -> dict[str, bytes]:
        store = SaltStore(self.run_dir.salts_path)
        try:
            salts = {cid: store.get(cid) for cid in store.ids()}
        except CorruptFileError as exc:
            self.add("salt", "mismatch", self.run_dir.salts_path, str(exc))
            return {}
        if self.run_dir.salts_path.exists() and self.run_dir.salts_path.stat().st_mode & 0o077:
            self.notes.append(f"{self.rel(self.run_dir.salts_path)} is readable by other users: chmod 600 it")
        return {cid: entry.salt for cid, entry in salts.items() if entry is not None}

    def check_clients(self, ledger: Ledger, salts: dict[str, bytes]) -> set[str]:
        clients = {c.client_id: c for c in self.query("list_clients", ledger.list_clients, [])}
        forgets = {f.client_id: f for f in self.query("list_forgets", ledger.forget_events, [])}
        salts_path = self.run_dir.salts_path
        for cid in sorted(set(clients) | set(forgets)):
            event = forgets.get(cid)
            if event is None and not clients[cid].forgotten:
                if cid not in salts:
                    self.add(
                        "salt",
                        "missing",
                        salts_path,
                        f"no salt for registered client {cid!r}: its commitments cannot be opened",
                    )
                continue
            if event is None:
                self.add("client", "missing", f"ledger: forget event of {cid!r}", "client is forgotten without one")
                continue
            self.add(
                "client",
                "forgotten",
                f"client {cid!r}",
                f"forgotten at round {event.round} ({event.mode}, {self.where(event.tx_id)}); "
                f"{len(event.remaining_client_ids)} clients remain",
            )
            if cid in salts:
                self.add(
                    "salt",
                    "mismatch",
                    salts_path,
                    f"the salt of forgotten client {cid!r} still exists: its commitments can be opened",
                )
        for cid in sorted(set(salts) - set(clients)):
            self.add("salt", "missing", f"ledger: client {cid!r}", "has a salt but was never registered")
        forgotten = set(forgets) | {c for c, r in clients.items() if r.forgotten}
        self.active = set(clients) - forgotten
        return forgotten


def audit_run(
    run_dir: RunDirectory | str | os.PathLike,
    *,
    ledger: Ledger | None = None,
    ledger_url: str | None = None,
    trusted_cert: Any = None,
) -> AuditReport:
    """Audit a run directory against its ledger. Never writes to the run, never finishes a
    pending forget (it reports it).

    Parameters
    ----------
    run_dir
        The run directory.
    ledger
        Audit against this ledger instead of the run's own.
    ledger_url
        Audit against this ledger URL; default: ``"ledger_url"`` of ``run.json``, else
        the embedded ``ledger.db`` of the run.
    trusted_cert
        The ledger writer's certificate as the auditor knows it (PEM file path, PEM bytes
        or ``x509.Certificate``): every block must be signed by its key, so a chain
        re-forged without that key fails. ``None``: the certificate the ledger file
        records is used, which proves internal consistency only (said in the notes).

    Returns
    -------
    AuditReport
        ``report.ok`` is ``False`` if anything is missing or does not match; each failed
        finding names its culprit.

    Raises
    ------
    RunBusyError
        A writer (training, a forget) holds the run's lock: the audit never reads a
        half-written run.
    """
    run_dir = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
    if trusted_cert is not None:
        from hyperfed.ledger.embedded.identity import load_certificate

        trusted_cert = load_certificate(trusted_cert)  # a bad path is the caller's error, raised now
    audit = AuditContext(run_dir, trusted_cert)
    url = ledger_url or (None if ledger is not None else ledger_url_of(run_dir))
    forgotten: set[str] = set()
    with read_view(run_dir):  # never a half-written run: refuses while a writer holds the lock
        check_pending_forget(audit)
        with audited_ledger(audit, ledger, url) as (opened, label):
            salts = audit.read_salts()
            if opened is not None:
                forgotten = audit.check_clients(opened, salts)
                audit.check_checkpoints(opened, forgotten, salts)
                check_shared_policy(audit, opened)
                audit.check_adapters(opened, forgotten)
                check_regenerated_adapters(audit, audit.query("list_forgets", opened.forget_events, []))
                check_metrics(audit, audit.active, forgotten)
            check_outbox(audit)
        check_layout(audit)
    report = AuditReport(str(run_dir.root), label, tuple(audit.findings), tuple(sorted(forgotten)), tuple(audit.notes))
    log.info("audit of %s: %s (%s)", run_dir.root, "ok" if report.ok else "FAILED", report.counts())
    return report
