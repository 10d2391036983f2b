"""The outbox: records wait while the ledger is down and arrive once, in order."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hyperfed.errors import ContractViolationError, LedgerUnavailableError
from hyperfed.ledger import EmbeddedLedger, Ledger, Outbox
from hyperfed.ledger.base import LedgerBackend

REPO = Path(__file__).resolve().parents[3]


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Flaky(LedgerBackend):
    """A real backend behind a switchable network fault.

    ``mode``: ``"up"``; ``"down"`` (nothing reaches the ledger); ``"lose-reply"`` (the
    transaction commits, then the reply is lost — the caller cannot tell it committed).
    """

    def __init__(self, inner: LedgerBackend) -> None:
        self.inner, self.mode, self.calls = inner, "up", 0

    def submit(self, function, *args):
        self.calls += 1
        if self.mode == "down":
            raise LedgerUnavailableError("connection refused")
        payload = self.inner.submit(function, *args)
        if self.mode == "lose-reply":
            raise LedgerUnavailableError("deadline exceeded after submit")
        return payload

    def evaluate(self, function, *args):
        if self.mode == "down":
            raise LedgerUnavailableError("connection refused")
        return self.inner.evaluate(function, *args)

    def close(self):
        self.inner.close()


@pytest.fixture
def flaky(embedded):
    return Flaky(embedded)


@pytest.fixture
def outbox_path(tmp_path):
    return tmp_path / "outbox.db"


def test_records_wait_while_down_and_arrive_in_order(flaky, embedded, outbox_path):
    ledger = Ledger(flaky, outbox=outbox_path)
    flaky.mode = "down"
    commitments = {"a": h("a"), "b": h("b")}
    receipts = [ledger.register_client(c, v) for c, v in commitments.items()]
    receipts.append(ledger.record_checkpoint(0, h("w0"), commitments))
    assert [r.status for r in receipts] == ["queued"] * 3
    assert ledger.outbox.pending_count() == 3 and embedded.head()[0] == 0
    flaky.mode = "up"
    report = ledger.flush()
    assert (report.sent, report.pending, report.drained) == (3, 0, True)
    assert [b.function for b in embedded.blocks(1)] == ["register_client", "register_client", "record_checkpoint"]
    assert ledger.latest_checkpoint().client_ids == ("a", "b")


def test_a_new_write_goes_behind_the_backlog(flaky, embedded, outbox_path):
    ledger = Ledger(flaky, outbox=outbox_path)
    flaky.mode = "down"
    ledger.register_client("a", h("a"))
    flaky.mode = "up"
    receipt = ledger.record_checkpoint(0, h("w0"), {"a": h("a")})
    assert receipt.committed
    assert [b.function for b in embedded.blocks(1)] == ["register_client", "record_checkpoint"]


def test_queued_records_survive_a_restart(flaky, embedded, outbox_path):
    flaky.mode = "down"
    with Outbox(outbox_path, flaky) as outbox:
        outbox.submit("register_client", "a", h("a"))
        outbox.submit("register_client", "b", h("b"))
    flaky.mode = "up"
    with Outbox(outbox_path, flaky) as reopened:
        assert reopened.flush().sent == 2
    assert [c.client_id for c in Ledger(embedded).list_clients()] == ["a", "b"]


def test_a_lost_reply_is_resent_and_recorded_once(flaky, embedded, outbox_path):
    ledger = Ledger(flaky, outbox=outbox_path)
    flaky.mode = "lose-reply"
    assert ledger.register_client("a", h("a")).status == "queued"
    (entry,) = ledger.outbox.entries()
    assert (entry.status, entry.attempts) == ("pending", 1)
    flaky.mode = "up"
    ledger.flush()
    (entry,) = ledger.outbox.entries()
    assert entry.status == "sent" and entry.attempts == 2
    assert b'"replayed": true' in entry.payload
    history = Ledger(embedded).client_history("a")
    assert len(history.changes) == 1  # one registration on the ledger


def test_same_record_enqueued_twice_is_queued_once(flaky, outbox_path):
    flaky.mode = "down"
    with Outbox(outbox_path, flaky) as outbox:
        assert outbox.enqueue("register_client", "a", h("a")) == outbox.enqueue("register_client", "a", h("a"))
        assert outbox.pending_count() == 1


def test_refused_records_are_set_aside_and_the_queue_moves_on(flaky, embedded, outbox_path):
    flaky.mode = "down"
    outbox = Outbox(outbox_path, flaky)
    outbox.enqueue("record_generation", "1", "ghost", h("a"), h("w"))
    outbox.enqueue("register_client", "a", h("a"))
    flaky.mode = "up"
    report = outbox.flush()
    assert report.sent == 1 and [e.function for e in report.rejected] == ["record_generation"]
    assert "[unknown-client]" in report.rejected[0].error
    with pytest.raises(ContractViolationError, match="unknown-client"):
        outbox.submit("record_generation", "1", "ghost", h("a"), h("w"))
    assert len(outbox.entries("rejected")) == 2
    outbox.close()


def test_one_flusher_at_a_time(flaky, outbox_path):
    first, second = Outbox(outbox_path, flaky), Outbox(outbox_path, flaky)
    try:
        second.enqueue("register_client", "a", h("a"))
        with first._exclusive():
            report = second.flush()
        assert report.sent == 0 and "another process" in report.error
        assert second.flush().sent == 1
    finally:
        first.close()
        second.close()


CRASH_AFTER_SUBMIT = textwrap.dedent("""
    import os, sys
    from hyperfed.ledger import EmbeddedLedger, Outbox
    outbox = Outbox(sys.argv[2], EmbeddedLedger(sys.argv[1]))
    real_update = outbox._update
    def update(seq, **fields):
        if fields.get("status") == "sent":
            os._exit(7)  # the ledger committed; we die before noting it
        real_update(seq, **fields)
    outbox._update = update
    outbox.submit("register_client", "a", "%s")
""")


def test_crash_between_commit_and_marking_sent(ledger_path, outbox_path):
    with EmbeddedLedger(ledger_path):
        pass
    code = CRASH_AFTER_SUBMIT % h("a")
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ledger_path), str(outbox_path)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 7, proc.stderr
    with EmbeddedLedger(ledger_path) as backend, Outbox(outbox_path, backend) as outbox:
        assert outbox.pending_count() == 1  # it does not know the record arrived
        assert outbox.flush().sent == 1
        assert len(Ledger(backend).client_history("a").changes) == 1
        assert [b.function for b in backend.blocks(1)] == ["register_client", "register_client"]
        assert Ledger(backend).list_clients()[0].registered_tx == backend.blocks(1)[0].tx_id


def test_facade_without_outbox_raises_unavailable(flaky):
    flaky.mode = "down"
    with pytest.raises(LedgerUnavailableError):
        Ledger(flaky).record_checkpoint(0, h("w"), {})
