"""A durable local queue of ledger records: nothing lost while the ledger is down,
nothing recorded twice when it returns.

Every write is first stored in the outbox's own SQLite file (WAL, ``synchronous=FULL``),
then sent in order. When the ledger is unreachable (:class:`LedgerUnavailableError`) the
records wait; :meth:`Outbox.flush` (called on every new write, or explicitly) sends them in
their original order once it is back.

Exactly-once, step by step:

* a record's id is ``sha256(function, args)``: enqueueing the same record again is a
  no-op, so a caller that retries after its own crash does not queue a duplicate;
* an entry is marked ``sent`` only after the ledger answered; a crash between the ledger's
  commit and that mark leaves it ``pending`` and it is sent again — and the contract
  treats a record identical to a stored one as a *replay* that writes nothing, so it is
  still recorded once;
* one flusher at a time (a thread lock plus an OS file lock), so two processes sharing
  an outbox never send the same entry concurrently.

A record the contract refuses (:class:`ContractViolationError`) will never succeed: it is
marked ``rejected`` with the reason, logged at ERROR, and the queue moves on.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hyperfed.errors import (
    ContractViolationError,
    LedgerConflictError,
    LedgerError,
    LedgerUnavailableError,
)
from hyperfed.ledger.base import LedgerBackend

try:  # POSIX advisory locks; elsewhere only threads are serialised.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["Outbox", "OutboxEntry", "FlushReport", "record_id"]

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT NOT NULL,"
    " function TEXT NOT NULL, args TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',"
    " attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, sent_at REAL,"
    " payload BLOB, error TEXT)",
    # A rejected record may be queued again later (after the cause is fixed).
    "CREATE UNIQUE INDEX IF NOT EXISTS outbox_live_record ON outbox(record_id) WHERE status != 'rejected'",
)


def record_id(function: str, args: tuple[str, ...] | list[str]) -> str:
    """Deterministic id of a record: hex sha256 of its function and arguments."""
    body = json.dumps([function, [str(a) for a in args]], separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class OutboxEntry:
    """One queued record. ``status`` is ``pending``, ``sent`` or ``rejected``."""

    seq: int
    record_id: str
    function: str
    args: tuple[str, ...]
    status: str
    attempts: int
    created_at: float
    sent_at: float | None
    payload: bytes | None
    error: str | None


@dataclass(frozen=True)
class FlushReport:
    """What one :meth:`Outbox.flush` did.

    Attributes
    ----------
    sent
        Entries the ledger accepted during this flush.
    rejected
        Entries the contract refused during this flush.
    pending
        Entries still waiting afterwards.
    error
        Why the flush stopped early (ledger unavailable, conflict, busy), if it did.
    """

    sent: int
    rejected: tuple[OutboxEntry, ...]
    pending: int
    error: str | None = None

    @property
    def drained(self) -> bool:
        return self.pending == 0


class Outbox:
    """Durable, ordered, exactly-once delivery of ledger writes.

    Parameters
    ----------
    path
        The outbox's SQLite file (created if missing; keep it next to the run).
    backend
        Where records go.
    conflict_retries
        Immediate resends after an MVCC conflict before giving up for this flush.
    """

    def __init__(self, path: str | Path, backend: LedgerBackend, *, conflict_retries: int = 3) -> None:
        self.path = Path(path)
        self.backend = backend
        self.conflict_retries = conflict_retries
        self._lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            self._conn.execute(statement)

    # ---------------------------------------------------------------- storage

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError(f"the outbox {self.path} is closed")
        return self._conn

    @staticmethod
    def _entry(row: tuple) -> OutboxEntry:
        seq, rid, function, args, status, attempts, created, sent, payload, error = row
        return OutboxEntry(
            seq,
            rid,
            function,
            tuple(json.loads(args)),
            status,
            attempts,
            created,
            sent,
            None if payload is None else bytes(payload),
            error,
        )

    def _update(self, seq: int, **fields: object) -> None:
        assignments = ", ".join(f"{name} = ?" for name in fields)
        with self._lock:
            self._db().execute(f"UPDATE outbox SET {assignments} WHERE seq = ?", (*fields.values(), seq))

    def enqueue(self, function: str, *args: str) -> int:
        """Store a record durably (or find the identical live one); return its ``seq``."""
        rid = record_id(function, args)
        with self._lock:
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT seq FROM outbox WHERE record_id = ? AND status != 'rejected'", (rid,)
                ).fetchone()
                if row is None:
                    cur = conn.execute(
                        "INSERT INTO outbox (record_id, function, args, created_at) VALUES (?, ?, ?, ?)",
                        (rid, function, json.dumps([str(a) for a in args]), time.time()),
                    )
                    row = (cur.lastrowid,)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return int(row[0])

    def get(self, seq: int) -> OutboxEntry:
        """The entry with this ``seq``."""
        with self._lock:
            row = self._db().execute("SELECT * FROM outbox WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise KeyError(f"no outbox entry {seq}")
        return self._entry(row)

    def entries(self, status: str | None = None) -> list[OutboxEntry]:
        """Entries in queue order, optionally only those with ``status``."""
        sql, params = "SELECT * FROM outbox", ()
        if status is not None:
            sql, params = sql + " WHERE status = ?", (status,)
        with self._lock:
            rows = self._db().execute(sql + " ORDER BY seq", params).fetchall()
        return [self._entry(r) for r in rows]

    def pending_count(self) -> int:
        with self._lock:
            return int(self._db().execute("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").fetchone()[0])

    # --------------------------------------------------------------- delivery

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[bool]:
        """Hold the flush lock of this outbox (across processes); yield whether we got it."""
        with self._lock:
            if fcntl is None:
                yield True
                return
            with open(str(self.path) + ".lock", "a+") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    yield False
                    return
                try:
                    yield True
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def _send(self, entry: OutboxEntry) -> bytes:
        for attempt in range(self.conflict_retries + 1):
            try:
                return self.backend.submit(entry.function, *entry.args)
            except LedgerConflictError:
                if attempt == self.conflict_retries:
                    raise
                log.debug("conflict sending outbox entry %d, retrying", entry.seq)
        raise AssertionError("unreachable")

    def flush(self) -> FlushReport:
        """Send pending entries in order until the queue is empty or the ledger fails."""
        sent, rejected, error = 0, [], None
        with self._exclusive() as mine:
            if not mine:
                return FlushReport(0, (), self.pending_count(), "another process is flushing")
            while True:
                with self._lock:
                    row = (
                        self._db()
                        .execute("SELECT * FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT 1")
                        .fetchone()
                    )
                if row is None:
                    break
                entry = self._entry(row)
                # Durable before sending: attempts > 0 marks "may already be on the ledger".
                self._update(entry.seq, attempts=entry.attempts + 1)
                try:
                    payload = self._send(entry)
                except ContractViolationError as exc:
                    self._update(entry.seq, status="rejected", error=str(exc))
                    rejected.append(self.get(entry.seq))
                    log.error("ledger refused queued %s (outbox #%d): %s", entry.function, entry.seq, exc)
                    continue
                except (LedgerUnavailableError, LedgerConflictError, LedgerError) as exc:
                    self._update(entry.seq, error=str(exc))
                    error = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "ledger write deferred (outbox #%d, %d waiting): %s", entry.seq, self.pending_count(), exc
                    )
                    break
                self._update(entry.seq, status="sent", sent_at=time.time(), payload=payload, error=None)
                sent += 1
        return FlushReport(sent, tuple(rejected), self.pending_count(), error)

    def submit(self, function: str, *args: str) -> OutboxEntry:
        """Queue a record behind any backlog and flush.

        Returns
        -------
        OutboxEntry
            ``status == "sent"`` (with the ledger's payload) or ``"pending"`` (queued).

        Raises
        ------
        ContractViolationError
            The contract refused this record.
        """
        seq = self.enqueue(function, *args)
        self.flush()
        entry = self.get(seq)
        if entry.status == "rejected":
            raise ContractViolationError(entry.error or f"{function} refused")
        return entry

    def close(self) -> None:
        """Close the outbox file (not the backend). Safe to call twice."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
