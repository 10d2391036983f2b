"""The embedded ledger's SQLite file: its schema and the committed-state reader the
contract's simulation reads through (:class:`~hyperfed.ledger.embedded.stub.StateReader`)."""

from __future__ import annotations

import sqlite3

from hyperfed.ledger.embedded.chain import decode_writes
from hyperfed.ledger.embedded.stub import HistoryEntry

__all__ = ["SCHEMA", "TIP", "BLOCK_COLUMNS", "SqliteState"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    number INTEGER PRIMARY KEY, prev_hash TEXT NOT NULL, tx_id TEXT NOT NULL UNIQUE,
    function TEXT NOT NULL, args TEXT NOT NULL, creator_msp TEXT NOT NULL,
    timestamp REAL NOT NULL, writes TEXT NOT NULL, hash TEXT NOT NULL, signature TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    key TEXT NOT NULL, block INTEGER NOT NULL, PRIMARY KEY (key, block)) WITHOUT ROWID;
"""
TIP = "SELECT number, hash FROM blocks ORDER BY number DESC LIMIT 1"
BLOCK_COLUMNS = "number, prev_hash, tx_id, function, args, creator_msp, timestamp, writes, hash"
# Composite keys start with "\x00", which sorts before everything else: starting an
# unbounded scan at "\x01" skips them, as a Fabric peer does.
_FIRST_SIMPLE_KEY = "\x01"


class SqliteState:
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
