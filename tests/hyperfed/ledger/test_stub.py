"""Peer semantics of the chaincode stub, over the embedded ledger's committed state."""

from __future__ import annotations

import asyncio

import pytest

from chaincode.contract import HyperFedContract
from chaincode.fabric_compat import ContractChaincode
from hyperfed.errors import LedgerConflictError
from hyperfed.ledger import Simulation
from hyperfed.ledger.embedded.stub import PeerStub, simulate_transaction


def raw_commit(ledger, tx_id, writes, timestamp=1000.0):
    """Commit a hand-made write set (no contract involved)."""
    sim = Simulation(
        tx_id=tx_id, function="raw", args=(), creator_msp="TestMSP", timestamp=timestamp, payload=b"", writes=writes
    )
    return ledger.commit(sim)


def stub_on(state, **kw):
    opts = dict(function="f", args=["x"], tx_id="tx-test", creator_msp="TestMSP", timestamp=1234.5)
    opts.update(kw)
    return PeerStub(state, **opts)


async def collect(iterator):
    return [item async for item in iterator]


def test_proposal_data(embedded):
    with embedded.snapshot() as state:
        stub = stub_on(state)
        assert stub.get_function_and_parameters() == ("f", ["x"])
        assert stub.get_txid() == "tx-test"
        assert stub.get_creator()["mspid"] == "TestMSP"
        ts = stub.get_tx_timestamp()
        assert (ts.seconds, ts.nanos) == (1234, 500_000_000)


def test_reads_see_committed_state_only_and_writes_are_buffered(embedded):
    block = raw_commit(embedded, "t1", {"k": b"v1"})
    with embedded.snapshot() as state:
        stub = stub_on(state)

        async def body():
            await stub.put_state("k", b"v2")
            await stub.put_state("new", "text")
            await stub.delete_state("gone")
            return await stub.get_state("k"), await stub.get_state("new")

        assert asyncio.run(body()) == (b"v1", b"")
        assert stub.writes == {"k": b"v2", "new": b"text", "gone": None}
        assert stub.reads == {"k": block, "new": None}
    with embedded.snapshot() as state:
        assert state.read("k") == (b"v1", block) and state.read("new") is None


def test_invalid_writes_are_refused(embedded):
    with embedded.snapshot() as state:
        stub = stub_on(state)
        with pytest.raises(ValueError):
            asyncio.run(stub.put_state("", b"v"))
        with pytest.raises(ValueError):
            asyncio.run(stub.put_state("k", b""))


def test_range_scans_are_lexical_end_exclusive_and_skip_composite_keys(embedded):
    composite = "\x00gen\x00r1\x00"
    raw_commit(embedded, "t1", {"a": b"1", "b": b"2", "c": b"3", "b/x": b"4", composite: b"5"})
    with embedded.snapshot() as state:
        stub = stub_on(state)
        everything = asyncio.run(collect(asyncio.run(stub.get_state_by_range("", ""))))
        assert [kv.key for kv in everything] == ["a", "b", "b/x", "c", "config"]
        part = asyncio.run(collect(asyncio.run(stub.get_state_by_range("b", "c"))))
        assert [(kv.key, kv.value) for kv in part] == [("b", b"2"), ("b/x", b"4")]
        assert [r.keys for r in stub.range_reads][1] == (("b", 1), ("b/x", 1))
        with pytest.raises(ValueError):
            asyncio.run(stub.get_state_by_range(composite, ""))


def test_history_is_newest_first_with_delete_flags(embedded):
    raw_commit(embedded, "t1", {"k": b"v1"}, timestamp=10.0)
    raw_commit(embedded, "t2", {"k": b"v2"}, timestamp=20.0)
    raw_commit(embedded, "t3", {"k": None}, timestamp=30.0)
    with embedded.snapshot() as state:
        mods = asyncio.run(collect(asyncio.run(stub_on(state).get_history_for_key("k"))))
    assert [(m.tx_id, m.is_delete, m.value, m.timestamp.seconds) for m in mods] == [
        ("t3", True, b"", 30),
        ("t2", False, b"v2", 20),
        ("t1", False, b"v1", 10),
    ]


def test_duplicate_transaction_ids_are_refused(embedded):
    raw_commit(embedded, "t1", {"k": b"v"})
    chaincode = ContractChaincode.new_chaincode(HyperFedContract())
    with embedded.snapshot() as state, pytest.raises(LedgerConflictError, match="duplicate"):
        simulate_transaction(chaincode, state, "get_config", [], tx_id="t1", creator_msp="HyperFedMSP", timestamp=1.0)
    with pytest.raises(LedgerConflictError, match="duplicate"):
        raw_commit(embedded, "t1", {"other": b"v"})


def test_stale_reads_and_phantoms_conflict(embedded):
    raw_commit(embedded, "t1", {"k": b"v1"})
    with embedded.snapshot() as state:
        stub = stub_on(state)
        asyncio.run(stub.get_state("k"))
        asyncio.run(stub.get_state_by_range("r/", "r0"))
    stale = Simulation(
        tx_id="t-stale",
        function="raw",
        args=(),
        creator_msp="TestMSP",
        timestamp=1.0,
        payload=b"",
        reads=stub.reads,
        writes={"k": b"mine"},
    )
    phantom = Simulation(
        tx_id="t-phantom",
        function="raw",
        args=(),
        creator_msp="TestMSP",
        timestamp=1.0,
        payload=b"",
        range_reads=tuple(stub.range_reads),
        writes={"z": b"1"},
    )
    raw_commit(embedded, "t2", {"k": b"v2", "r/new": b"x"})
    with pytest.raises(LedgerConflictError, match="MVCC"):
        embedded.commit(stale)
    with pytest.raises(LedgerConflictError, match="phantom"):
        embedded.commit(phantom)
    with embedded.snapshot() as state:
        assert state.read("k")[0] == b"v2" and state.read("z") is None
