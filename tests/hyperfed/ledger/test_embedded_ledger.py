"""EmbeddedLedger: simulate/commit, identities, concurrency, persistence, failure modes."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading

import pytest

from hyperfed.errors import (
    ContractViolationError,
    LedgerConflictError,
    LedgerError,
    LedgerUnavailableError,
)
from hyperfed.ledger import EmbeddedLedger, Ledger, violation_code
from hyperfed.ledger.embedded.ledger import new_tx_id

WRITER = "HyperFedMSP"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_new_file_starts_with_the_init_block(embedded):
    (genesis,) = embedded.blocks()
    assert (genesis.number, genesis.function, genesis.creator_msp) == (0, "init_ledger", WRITER)
    assert embedded.head() == (0, genesis.hash)


def test_simulate_writes_nothing_and_commit_appends_a_block(embedded):
    sim = embedded.simulate(
        "register_client", ["alice", h("a")], tx_id="tx-1", creator_msp=WRITER, timestamp=1_700_000_000.25
    )
    assert sim.writes.keys() == {"client/alice"} and sim.reads["client/alice"] is None
    assert json.loads(sim.payload)["record"]["registered_at"] == "2023-11-14T22:13:20.250000000Z"
    assert embedded.head()[0] == 0
    assert embedded.commit(sim) == 1
    assert Ledger(embedded).get_client("alice").registered_tx == "tx-1"


def test_simulation_is_deterministic(embedded):
    args = dict(tx_id="tx-d", creator_msp=WRITER, timestamp=42.0)
    one = embedded.simulate("register_client", ["alice", h("a")], **args)
    two = embedded.simulate("register_client", ["alice", h("a")], **args)
    assert one == two


def test_refusals_surface_as_contract_violations(embedded):
    with pytest.raises(ContractViolationError, match=r"\[unknown-client\]"):
        embedded.simulate("record_generation", ["1", "ghost", h("a"), h("w")], tx_id="tx-x", creator_msp=WRITER)


def test_only_the_writer_msp_may_write(ledger_path, embedded):
    outsider = EmbeddedLedger(ledger_path, writer_msp="Org2MSP", msp_id="Org2MSP")
    try:
        with pytest.raises(ContractViolationError) as info:
            outsider.submit("register_client", "alice", h("a"))
        assert violation_code(info.value) == "not-writer"
        with pytest.raises(ContractViolationError, match="already-configured"):
            outsider.submit("init_ledger", "Org2MSP")
        assert json.loads(outsider.evaluate("get_config"))["writer_msp"] == WRITER
    finally:
        outsider.close()


def test_reopening_keeps_the_recorded_writer(ledger_path, embedded, caplog):
    Ledger(embedded).register_client("alice", h("a"))
    embedded.close()
    with caplog.at_level(logging.WARNING, logger="hyperfed.ledger.embedded.ledger"):
        reopened = EmbeddedLedger(ledger_path, writer_msp="OtherMSP", msp_id=WRITER)
    try:
        assert "keeps its writer MSP" in caplog.text
        assert Ledger(reopened).get_client("alice").commitment == h("a")
        assert reopened.verify().ok and reopened.head()[0] == 1
    finally:
        reopened.close()


def test_two_writers_on_one_file_conflict_instead_of_losing_an_update(ledger_path, embedded):
    other = EmbeddedLedger(ledger_path, writer_msp=WRITER, msp_id=WRITER)
    try:
        mine = embedded.simulate("register_client", ["alice", h("mine")], tx_id=new_tx_id(WRITER), creator_msp=WRITER)
        theirs = other.simulate("register_client", ["alice", h("theirs")], tx_id=new_tx_id(WRITER), creator_msp=WRITER)
        other.commit(theirs)
        with pytest.raises(LedgerConflictError, match="client/alice"):
            embedded.commit(mine)
        with pytest.raises(ContractViolationError, match="duplicate-client"):  # the retry
            embedded.submit("register_client", "alice", h("mine"))
        assert Ledger(embedded).get_client("alice").commitment == h("theirs")
    finally:
        other.close()


def test_threads_and_two_objects_sharing_a_file_lose_nothing(ledger_path, embedded):
    other = EmbeddedLedger(ledger_path, writer_msp=WRITER, msp_id=WRITER)
    ledgers = [Ledger(embedded, conflict_retries=50), Ledger(other, conflict_retries=50)]
    errors = []

    def register(worker: int) -> None:
        try:
            for i in range(15):
                ledgers[worker % 2].register_client(f"w{worker}-{i}", h(f"{worker}-{i}"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert not errors
    assert len(ledgers[0].list_clients()) == 90
    assert embedded.verify().ok


def test_racing_registrations_of_one_id_have_exactly_one_winner(ledger_path, embedded):
    others = [EmbeddedLedger(ledger_path, writer_msp=WRITER, msp_id=WRITER) for _ in range(3)]
    sims = [
        led.simulate("register_client", ["alice", h(f"v{i}")], tx_id=new_tx_id(WRITER), creator_msp=WRITER)
        for i, led in enumerate(others)
    ]
    outcomes = []
    for led, sim in zip(others, sims, strict=True):
        try:
            led.commit(sim)
            outcomes.append("ok")
        except LedgerConflictError:
            outcomes.append("conflict")
    for led in others:
        led.close()
    assert outcomes == ["ok", "conflict", "conflict"]
    assert Ledger(embedded).get_client("alice").commitment == h("v0")


def test_a_locked_file_reports_unavailable(ledger_path, embedded):
    blocker = sqlite3.connect(ledger_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(LedgerUnavailableError, match="busy"):
            EmbeddedLedger(ledger_path, busy_timeout=0.05)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_garbage_file_and_closed_ledger_raise_ledger_errors(tmp_path, embedded):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(LedgerError, match="not a readable HyperFed ledger"):
        EmbeddedLedger(junk)
    embedded.close()
    with pytest.raises(LedgerError, match="closed"):
        embedded.evaluate("get_config")
