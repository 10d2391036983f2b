"""The embedded ledger (the default): the HyperFed contract on a hash-chained SQLite file.

``EmbeddedLedger`` plays a Fabric peer for one organisation: it simulates transactions
with the real contract against committed state (:mod:`hyperfed.ledger.embedded.stub`), then
validates the read set (MVCC) and commits the write set as a new block, atomically.

Durability and crash safety come from SQLite: WAL journal, ``synchronous=FULL`` and one
SQLite transaction per commit (block row + state + history index), so a process killed
mid-write leaves the previous state — never half a block. Two ``EmbeddedLedger`` objects
on one file (or threads sharing one) are safe: a transaction whose reads went stale is
refused with :class:`~hyperfed.errors.LedgerConflictError`, never applied over a newer
write.

On a new file the constructor submits ``init_ledger(writer_msp)`` as block 0, from
``writer_msp``. Afterwards only that MSP may write; ``msp_id`` is the identity this object
submits and evaluates as.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from chaincode.contract import HyperFedContract
from chaincode.fabric_compat import ContractChaincode
from hyperfed.errors import (
    LedgerConflictError,
    LedgerError,
    LedgerUnavailableError,
)
from hyperfed.ledger.base import LedgerBackend
from hyperfed.ledger.embedded.chain import (
    GENESIS_PREV_HASH,
    Block,
    Problem,
    VerifyReport,
    block_hash,
    decode_writes,
    encode_writes,
    verify_chain,
)
from hyperfed.ledger.embedded.stub import HistoryEntry, Simulation, StateReader, simulate_transaction

__all__ = ["EmbeddedLedger", "Simulation", "new_tx_id"]

log = logging.getLogger(__name__)

FORMAT = "hyperfed-embedded-ledger/1"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    number INTEGER PRIMARY KEY, prev_hash TEXT NOT NULL, tx_id TEXT NOT NULL UNIQUE,
    function TEXT NOT NULL, args TEXT NOT NULL, creator_msp TEXT NOT NULL,
    timestamp REAL NOT NULL, writes TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    key TEXT NOT NULL, block INTEGER NOT NULL, PRIMARY KEY (key, block)) WITHOUT ROWID;
"""
_TIP = "SELECT number, hash FROM blocks ORDER BY number DESC LIMIT 1"
# Composite keys start with "\x00", which sorts before everything else: starting an
# unbounded scan at "\x01" skips them, as a Fabric peer does.
_FIRST_SIMPLE_KEY = "\x01"


def new_tx_id(creator_msp: str) -> str:
    """A Fabric-style transaction id: hex sha256(random nonce || creator)."""
    return hashlib.sha256(os.urandom(24) + creator_msp.encode("utf-8")).hexdigest()


class _SqliteState:
    """Committed state of one connection, as :class:`~hyperfed.ledger.embedded.stub.StateReader`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def read(self, key: str) -> tuple[bytes, int] | None:
        row = self._conn.execute("SELECT value, version FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]))

    def read_range(self, start: str, end: str) -> list[tuple[str, bytes, int]]:
        sql = "SELECT key, value, version FROM state WHERE key >= ?"
        params = [start or _FIRST_SIMPLE_KEY]
        if end:
            sql, params = sql + " AND key < ?", params + [end]
        rows = self._conn.execute(sql + " ORDER BY key", params).fetchall()
        return [(k, bytes(v), int(n)) for k, v, n in rows]

    def read_history(self, key: str) -> list[HistoryEntry]:
        rows = self._conn.execute(
            "SELECT b.tx_id, b.timestamp, b.writes FROM history h JOIN blocks b"
            " ON b.number = h.block WHERE h.key = ? ORDER BY h.block DESC",
            (key,),
        ).fetchall()
        out = []
        for tx_id, timestamp, writes in rows:
            value = decode_writes(writes).get(key)
            out.append(HistoryEntry(tx_id=tx_id, timestamp=float(timestamp), value=value))
        return out

    def has_transaction(self, tx_id: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM blocks WHERE tx_id = ?", (tx_id,)).fetchone()
        return row is not None

    def version(self, key: str) -> int | None:
        row = self._conn.execute("SELECT version FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else int(row[0])


class EmbeddedLedger(LedgerBackend):
    """A single-file ledger running :class:`chaincode.contract.HyperFedContract` in-process.

    Parameters
    ----------
    path
        SQLite file; created (with its parent folders) if missing.
    writer_msp
        The only MSP allowed to write; recorded by block 0 when the file is new.
        Ignored (with a warning if different) for an existing ledger.
    msp_id
        The identity this object's :meth:`submit` and :meth:`evaluate` act as.
    busy_timeout
        Seconds to wait for another writer's lock before raising
        :class:`~hyperfed.errors.LedgerUnavailableError`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        writer_msp: str = "HyperFedMSP",
        msp_id: str = "HyperFedMSP",
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.local_file = self.path
        self.msp_id = msp_id
        self._lock = threading.RLock()
        self._chaincode = ContractChaincode.new_chaincode(HyperFedContract())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            with self._sqlite_errors():
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._create_schema()
            self._state = _SqliteState(self._conn)
            self._ensure_configured(writer_msp)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise LedgerUnavailableError(f"{self.path} is busy: {exc}") from exc
            raise LedgerError(f"{self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path} is not a readable HyperFed ledger: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self, mode: str = "") -> Iterator[sqlite3.Connection]:
        """One SQLite transaction under the object lock; rolled back unless committed."""
        with self._lock, self._sqlite_errors():
            conn = self._connection()
            conn.execute(f"BEGIN {mode}")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError(f"the ledger {self.path} is closed")
        return self._conn

    def _create_schema(self) -> None:
        with self._transaction("IMMEDIATE") as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            row = conn.execute("SELECT value FROM ledger_meta WHERE name = 'format'").fetchone()
            if row is None:
                conn.execute("INSERT INTO ledger_meta VALUES ('format', ?)", (FORMAT,))
            elif row[0] != FORMAT:
                raise LedgerError(f"{self.path} holds ledger format {row[0]!r}, not {FORMAT!r}")

    def _ensure_configured(self, writer_msp: str) -> None:
        if self.head() is None:
            try:
                sim = self.simulate("init_ledger", [writer_msp], tx_id=new_tx_id(writer_msp), creator_msp=writer_msp)
                self.commit(sim)
                log.info("created ledger %s with writer MSP %s", self.path, writer_msp)
                return
            except LedgerConflictError:
                pass  # another process initialised it at the same moment
        config = json.loads(self.evaluate("get_config"))
        if config["writer_msp"] != writer_msp:
            log.warning("ledger %s keeps its writer MSP %r (asked for %r)", self.path, config["writer_msp"], writer_msp)

    # ---------------------------------------------------------- peer operations

    def simulate(
        self, function: str, args: Sequence[str], *, tx_id: str, creator_msp: str, timestamp: float | None = None
    ) -> Simulation:
        """Execute the contract against committed state without writing anything.

        Raises
        ------
        ContractViolationError
            The contract refused.
        LedgerConflictError
            ``tx_id`` was already committed.
        """
        when = time.time() if timestamp is None else float(timestamp)
        with self._transaction():  # one read snapshot for the whole simulation
            return simulate_transaction(
                self._chaincode, self._state, function, list(args), tx_id=tx_id, creator_msp=creator_msp, timestamp=when
            )

    def commit(self, sim: Simulation) -> int:
        """Validate ``sim``'s reads against current state and append it as a block.

        Returns
        -------
        int
            The new block's number.

        Raises
        ------
        LedgerConflictError
            A key or range it read has changed since, or its tx id is already committed.
        """
        with self._transaction("IMMEDIATE") as conn:
            self._validate(sim)
            tip = conn.execute(_TIP).fetchone()
            number, prev_hash = (0, GENESIS_PREV_HASH) if tip is None else (tip[0] + 1, tip[1])
            args, writes = json.dumps(list(sim.args), ensure_ascii=False), encode_writes(sim.writes)
            digest = block_hash(
                number, prev_hash, sim.tx_id, sim.function, args, sim.creator_msp, sim.timestamp, writes
            )
            conn.execute(
                "INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (number, prev_hash, sim.tx_id, sim.function, args, sim.creator_msp, sim.timestamp, writes, digest),
            )
            for key, value in sorted(sim.writes.items()):
                if value is None:
                    conn.execute("DELETE FROM state WHERE key = ?", (key,))
                else:
                    conn.execute(
                        "INSERT INTO state VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE"
                        " SET value = excluded.value, version = excluded.version",
                        (key, value, number),
                    )
                conn.execute("INSERT INTO history VALUES (?, ?)", (key, number))
        return number

    def _validate(self, sim: Simulation) -> None:
        if self._state.has_transaction(sim.tx_id):
            raise LedgerConflictError(f"duplicate transaction id {sim.tx_id}: already committed")
        for key, seen in sim.reads.items():
            now = self._state.version(key)
            if now != seen:
                raise LedgerConflictError(f"MVCC read conflict on {key!r}: read version {seen}, now {now}; retry")
        for scan in sim.range_reads:
            now = tuple((k, v) for k, _, v in self._state.read_range(scan.start, scan.end))
            if now != scan.keys:
                raise LedgerConflictError(f"phantom read in range [{scan.start!r}, {scan.end!r}); retry")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[StateReader]:
        """A consistent read-only view of committed state, for as long as the block runs."""
        with self._transaction():
            yield self._state

    # ------------------------------------------------------------ LedgerBackend

    def submit(self, function: str, *args: str) -> bytes:
        """Simulate as :attr:`msp_id` and commit; the payload once committed."""
        sim = self.simulate(function, args, tx_id=new_tx_id(self.msp_id), creator_msp=self.msp_id)
        self.commit(sim)
        return sim.payload

    def evaluate(self, function: str, *args: str) -> bytes:
        """Run a query as :attr:`msp_id` on committed state; nothing is written."""
        return self.simulate(function, args, tx_id=new_tx_id(self.msp_id), creator_msp=self.msp_id).payload

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ---------------------------------------------------------------- the chain

    def head(self) -> tuple[int, str] | None:
        """``(number, hash)`` of the last block, or ``None`` for an empty file."""
        with self._transaction() as conn:
            row = conn.execute(_TIP).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def blocks(self, start: int = 0) -> list[Block]:
        """Stored blocks from ``start`` on, in order (not verified: see :meth:`verify`)."""
        with self._transaction() as conn:
            rows = conn.execute("SELECT * FROM blocks WHERE number >= ? ORDER BY number", (start,)).fetchall()
        return [Block(*row) for row in rows]

    def verify(self, *, expected_head: tuple[int, str] | None = None) -> VerifyReport:
        """Check the file: page integrity, hash chain, and state == replay of the blocks.

        Parameters
        ----------
        expected_head
            Optional ``(number, hash)`` recorded elsewhere earlier; block ``number`` must
            still exist with that hash (catches truncation and rewritten tips).
        """
        with self._transaction() as conn:
            check = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
            blocks = [Block(*row) for row in conn.execute("SELECT * FROM blocks ORDER BY number")]
            state = {k: (bytes(v), int(n)) for k, v, n in conn.execute("SELECT * FROM state")}
            history = [(k, int(n)) for k, n in conn.execute("SELECT key, block FROM history")]
        report = verify_chain(blocks, state, history, expected_head=expected_head)
        if check != ["ok"]:
            problem = Problem("file-corrupt", str(self.path), "; ".join(check)[:500])
            report = VerifyReport(report.blocks, report.head, (problem,) + report.problems)
        log.info("%s", report)
        return report

    def __repr__(self) -> str:
        return f"EmbeddedLedger({str(self.path)!r}, msp_id={self.msp_id!r})"
