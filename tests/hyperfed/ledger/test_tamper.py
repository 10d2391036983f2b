"""verify(): every kind of edit to the ledger file is detected and located."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from hyperfed.errors import TamperDetectedError
from hyperfed.ledger import EmbeddedLedger, Ledger
from hyperfed.ledger.embedded.chain import block_hash

WRITER = "HyperFedMSP"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def path(tmp_path):
    """A closed ledger: init (block 0), 3 registrations (1-3), checkpoint (4), generations (5-6)."""
    file = tmp_path / "ledger.db"
    commitments = {c: h(c) for c in ("alice", "bob", "carol")}
    with Ledger(EmbeddedLedger(file)) as ledger:
        for cid, commitment in commitments.items():
            ledger.register_client(cid, commitment)
        ledger.record_checkpoint(0, h("w0"), commitments)
        ledger.record_generation(1, "alice", h("a1"), h("w0"))
        ledger.record_generation(1, "bob", h("b1"), h("w0"))
    return file


def tamper(path, *statements):
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for sql, params in statements:
            conn.execute(sql, params)
    finally:
        conn.close()


def report_of(path, **kw):
    with EmbeddedLedger(path) as ledger:
        return ledger.verify(**kw)


def test_untouched_file_verifies(path):
    report = report_of(path)
    assert report.ok and report.blocks == 7 and report.head[0] == 6
    report.raise_if_failed()


def test_edited_state_row(path):
    tamper(path, ("UPDATE state SET value = ? WHERE key = 'client/bob'", (b'{"type":"client"}',)))
    report = report_of(path)
    assert not report.ok
    assert report.culprits() == ["state 'client/bob'"]
    assert report.problems[0].kind == "state-altered"
    with pytest.raises(TamperDetectedError, match="client/bob"):
        report.raise_if_failed()


def test_inserted_and_deleted_state_rows(path):
    tamper(
        path,
        ("INSERT INTO state VALUES ('client/mallory', ?, 3)", (b"{}",)),
        ("DELETE FROM state WHERE key = 'client/carol'", ()),
    )
    kinds = {(p.kind, p.location) for p in report_of(path).problems}
    assert kinds == {("state-inserted", "state 'client/mallory'"), ("state-deleted", "state 'client/carol'")}


def test_deleted_block(path):
    tamper(path, ("DELETE FROM blocks WHERE number = 3", ()))
    report = report_of(path)
    assert "block 3" in report.culprits()
    assert any(p.kind == "missing-block" for p in report.problems)


def test_edited_block_contents(path):
    forged_args = '["1", "alice", "0000", "0000"]'
    tamper(path, ("UPDATE blocks SET args = ? WHERE number = 5", (forged_args,)))
    report = report_of(path)
    assert report.culprits() == ["block 5"] and report.problems[0].kind == "block-altered"


def test_edited_block_with_recomputed_hash_breaks_the_next_link(path):
    conn = sqlite3.connect(path, isolation_level=None)
    row = list(conn.execute("SELECT * FROM blocks WHERE number = 5").fetchone())
    row[4] = '["1","alice","' + h("forged") + '","' + h("w0") + '"]'
    row[8] = block_hash(*row[:8])
    conn.execute("UPDATE blocks SET args = ?, hash = ? WHERE number = 5", (row[4], row[8]))
    conn.close()
    report = report_of(path)
    # the re-hashed block no longer carries the writer's signature over its hash
    assert [(p.kind, p.location) for p in report.problems] == [
        ("chain-broken", "block 6"),
        ("signature-invalid", "block 5"),
    ]


def test_swapped_blocks(path):
    conn = sqlite3.connect(path, isolation_level=None)
    two, three = (conn.execute("SELECT * FROM blocks WHERE number = ?", (n,)).fetchone() for n in (2, 3))
    conn.execute("BEGIN")
    conn.execute("DELETE FROM blocks WHERE number IN (2, 3)")
    marks = ", ".join("?" * len(two))
    conn.execute(f"INSERT INTO blocks VALUES ({marks})", (2, *three[1:]))
    conn.execute(f"INSERT INTO blocks VALUES ({marks})", (3, *two[1:]))
    conn.execute("COMMIT")
    conn.close()
    report = report_of(path)
    assert {"block 2", "block 3"} <= set(report.culprits())
    assert {p.kind for p in report.problems} >= {"block-altered", "chain-broken"}


def test_inserted_block_at_the_tip_is_caught_by_its_missing_effects(path):
    conn = sqlite3.connect(path, isolation_level=None)
    number, prev = conn.execute("SELECT number, hash FROM blocks ORDER BY number DESC").fetchone()
    writes = '[["client/mallory","e30="]]'
    body = (number + 1, prev, "forged-tx", "register_client", '["mallory"]', WRITER, 1.0, writes)
    conn.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '')", (*body, block_hash(*body)))
    conn.close()
    report = report_of(path)
    assert [(p.kind, p.location) for p in report.problems] == [
        ("state-deleted", "state 'client/mallory'"),
        ("history-deleted", "history 'client/mallory'@7"),
        ("signature-missing", "block 7"),  # and nobody without the writer's key can sign it
    ]


def test_edited_history_index(path):
    tamper(path, ("DELETE FROM history WHERE key = 'client/alice'", ()))
    assert report_of(path).culprits() == ["history 'client/alice'@1"]


def test_a_cleanly_truncated_chain_needs_an_anchor(path):
    with EmbeddedLedger(path) as ledger:
        anchor = ledger.head()
    tamper(
        path,  # remove the last generation and every trace of it
        ("DELETE FROM blocks WHERE number = 6", ()),
        ("DELETE FROM state WHERE key IN ('gen/0000000001/bob', 'cgen/bob/0000000001')", ()),
        ("DELETE FROM history WHERE block = 6", ()),
    )
    assert report_of(path).ok  # a hash chain alone cannot see a clean truncation...
    report = report_of(path, expected_head=anchor)  # ...a recorded head can
    assert [(p.kind, p.location) for p in report.problems] == [("chain-truncated", "block 6")]
