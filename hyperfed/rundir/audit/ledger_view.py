"""The ledger an audit reads, opened without touching the run: private copies of SQLite files.

Opening the run's own SQLite file — even ``mode=ro`` — lets SQLite create or update the
``-shm`` index beside it, so the audit reads byte copies in a temporary folder
(:func:`snapshot`), and :func:`audited_ledger` verifies an embedded ledger's signed hash
chain (:func:`check_chain`) before its contents are checked.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from hyperfed.errors import CorruptFileError, HyperFedError
from hyperfed.ledger.base import LedgerBackend
from hyperfed.ledger.client import Ledger
from hyperfed.ledger.embedded import EmbeddedLedger
from hyperfed.rundir import RunDirectory

if TYPE_CHECKING:
    from hyperfed.rundir.audit.checks import AuditContext

__all__ = [
    "embedded_path",
    "snapshot",
    "read_only_copy",
    "audited_ledger",
    "check_chain",
    "note_signatures",
    "check_outbox",
]

_MISSING_KINDS = {"missing-block", "chain-truncated", "state-deleted", "history-deleted"}


def embedded_path(url: str | None, run_dir: RunDirectory) -> Path | None:
    """The SQLite file a URL names, or ``None`` for a non-embedded ledger."""
    if url is None:
        return run_dir.ledger_path
    if "://" not in url:
        return Path(url)
    scheme, rest = url.split("://", 1)
    return Path(rest.split("?", 1)[0]) if scheme.lower() == "sqlite" else None


def snapshot(path: Path, folder: Path) -> Path:
    """A private copy of a SQLite file and its ``-wal``, made by reading them only.

    Opening the run's own file — even ``mode=ro`` — lets SQLite create or update the
    ``-shm`` index beside it; a byte copy opened in ``folder`` touches nothing of the run.
    SQLite replays the copied WAL on open; a copy torn by a concurrent writer shows as a
    corrupt file (``PRAGMA quick_check``) or a broken chain, never as a silent pass.
    """
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / path.name
    wal = path.with_name(path.name + "-wal")
    shutil.copyfile(path, copy)
    if wal.exists():
        shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
    return copy


def read_only_copy(path: Path, folder: Path) -> sqlite3.Connection:
    """A connection to a private copy (:func:`snapshot`) of a SQLite file."""
    return sqlite3.connect(snapshot(path, folder))


def check_chain(audit: AuditContext, backend: LedgerBackend, label: str) -> bool:
    """Verify a backend's local chain against ``ledger_head.json``; ``False`` if the
    backend keeps none (a Fabric network verifies its own chain)."""
    if backend.local_file is None:
        return False
    head_path = audit.run_dir.ledger_head_path
    anchor = None
    if not head_path.exists():
        audit.add(
            "ledger",
            "missing",
            head_path,
            "no ledger head anchor: a truncated chain would go unnoticed (RunRecorder.close() writes it)",
        )
    else:
        try:
            data = audit.run_dir.read_json(head_path)
            anchor = (int(data["number"]), str(data["hash"]))
        except (CorruptFileError, KeyError, TypeError, ValueError) as exc:
            audit.add("ledger", "mismatch", head_path, f"unreadable anchor: {exc}")
    if isinstance(backend, EmbeddedLedger):
        report = backend.verify(expected_head=anchor, trusted_cert=audit.trusted_cert)
    else:
        report = backend.verify(expected_head=anchor)
    if report is None:
        return False
    note_signatures(audit, report.signer, report.unsigned)
    audit.block_of = {b.tx_id: b.number for b in backend.blocks()}
    for problem in report.problems:
        status = "missing" if problem.kind in _MISSING_KINDS else "mismatch"
        audit.add("ledger", status, f"{label}: {problem.location}", f"{problem.kind}: {problem.detail}")
    if report.ok:
        pinned = f", anchored at block {anchor[0]}" if anchor else ""
        audit.add("ledger", "match", label, f"{report.blocks} blocks: hash chain, state and history replay{pinned}")
    return True


def note_signatures(audit: AuditContext, signer: str, unsigned: int) -> None:
    """Say plainly what the block signatures prove."""
    if audit.trusted_cert is not None:
        audit.notes.append(f"block signatures verified against the {signer}: nobody without its key wrote them")
    elif signer:
        audit.notes.append(
            f"no trusted certificate given: block signatures were checked against the {signer} "
            "that the ledger file itself holds, which proves internal consistency only (whoever "
            "rewrites the file can replace it); pass --trust-cert WRITER-CERT.pem to prove who wrote it"
        )
    if unsigned:
        audit.notes.append(f"{unsigned} blocks carry no signature (written before the ledger signed its blocks)")


@contextlib.contextmanager
def audited_ledger(audit: AuditContext, ledger: Ledger | None, url: str | None) -> Iterator[tuple[Ledger | None, str]]:
    """The ledger to audit against (verifying its chain when it is embedded)."""
    if ledger is not None:
        local = ledger.backend.local_file
        if audit.trusted_cert is not None and local is None:
            audit.notes.append("the trusted certificate was not used: this ledger keeps no local signed chain")
        label = audit.rel(local) if local is not None else repr(ledger.backend)
        if not check_chain(audit, ledger.backend, label):
            audit.notes.append(
                "ledger is not embedded: its contents were audited through the "
                "Ledger API; hash-chain verification is the ledger network's own"
            )
        yield ledger, repr(ledger.backend)
        return
    path = embedded_path(url, audit.run_dir)
    if path is None:
        audit.notes.append(
            f"ledger {url} is not embedded: its contents were audited through "
            "the Ledger API; hash-chain verification is the ledger network's own"
        )
        with Ledger.from_url(url) as remote:
            yield remote, str(url)
        return
    label = audit.rel(path)
    if not path.exists():
        audit.add("ledger", "missing", label, "the ledger file is gone")
        yield None, label
        return
    with tempfile.TemporaryDirectory(prefix="hyperfed-audit-") as tmp:
        try:
            backend = EmbeddedLedger(snapshot(path, Path(tmp)), read_only=True)
        except (sqlite3.Error, HyperFedError, OSError) as exc:
            audit.add("ledger", "mismatch", label, f"not a readable HyperFed ledger: {exc}")
            yield None, label
            return
        with backend:
            check_chain(audit, backend, label)
            yield Ledger(backend), label


def check_outbox(audit: AuditContext) -> None:
    """Records still waiting in ``outbox.db`` for the ledger, or refused by it."""
    path = audit.run_dir.outbox_path
    if not path.exists():
        return
    try:
        with tempfile.TemporaryDirectory(prefix="hyperfed-audit-") as tmp:
            conn = read_only_copy(path, Path(tmp))
            try:
                rows = dict(conn.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall())
            finally:
                conn.close()
    except (sqlite3.Error, OSError) as exc:
        audit.add("outbox", "mismatch", path, f"unreadable: {exc}")
        return
    if rows.get("pending"):
        audit.add(
            "outbox",
            "missing",
            path,
            f"{rows['pending']} records never reached the ledger: open the run's RunRecorder and flush()",
        )
    if rows.get("rejected"):
        audit.add("outbox", "mismatch", path, f"{rows['rejected']} records were refused by the contract")
