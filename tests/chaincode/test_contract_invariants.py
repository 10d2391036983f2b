"""Contract rules that need more than one identity, raw state, or a look at the code itself."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from chaincode.contract import EVALUATE_TRANSACTIONS, SUBMIT_TRANSACTIONS, HyperFedContract
from chaincode.fabric_compat import ContractChaincode
from hyperfed.errors import ContractViolationError
from hyperfed.ledger import EmbeddedLedger, violation_code
from hyperfed.ledger.embedded.ledger import new_tx_id
from hyperfed.ledger.embedded.stub import HistoryEntry, PeerStub, simulate_transaction

WRITER = "HyperFedMSP"
CHAINCODE_DIR = Path(__file__).resolve().parents[2] / "chaincode"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class DictState:
    """Committed state held in a dict (for states no real ledger would produce)."""

    def __init__(self, values: dict[str, bytes] | None = None) -> None:
        self.values = dict(values or {})

    def read(self, key):
        return (self.values[key], 1) if key in self.values else None

    def read_range(self, start, end):
        return [(k, v, 1) for k, v in sorted(self.values.items()) if k >= (start or "\x01") and (not end or k < end)]

    def read_history(self, key) -> list[HistoryEntry]:
        return []

    def has_transaction(self, tx_id):
        return False


def simulate(state, function, *args, msp=WRITER):
    chaincode = ContractChaincode.new_chaincode(HyperFedContract())
    return simulate_transaction(chaincode, state, function, list(args), tx_id="tx", creator_msp=msp, timestamp=5.0)


def code_of(call) -> str:
    with pytest.raises(ContractViolationError) as info:
        call()
    return violation_code(info.value)


@pytest.fixture
def ledger(tmp_path):
    led = EmbeddedLedger(tmp_path / "ledger.db", writer_msp=WRITER, msp_id=WRITER)
    yield led
    led.close()


def as_msp(ledger, msp, function, *args):
    sim = ledger.simulate(function, list(args), tx_id=new_tx_id(msp), creator_msp=msp)
    ledger.commit(sim)
    return json.loads(sim.payload)


def test_registered_transactions_and_their_kinds():
    chaincode = ContractChaincode.new_chaincode(HyperFedContract())
    meta = json.loads(chaincode._metadata.to_json())["contracts"]["hyperfed"]
    kinds = {tx["name"]: tx["tag"][1] for tx in meta["transactions"]}
    assert kinds == {**{n: "SUBMIT" for n in SUBMIT_TRANSACTIONS}, **{n: "EVALUATE" for n in EVALUATE_TRANSACTIONS}}


def test_nothing_can_be_written_before_init():
    empty = DictState()
    assert code_of(lambda: simulate(empty, "register_client", "a", h("a"))) == "not-configured"
    assert code_of(lambda: simulate(DictState(), "get_config")) == "not-configured"


def test_init_ledger_is_once_and_by_the_writer_itself(ledger):
    outsider_init = lambda: as_msp(ledger, "Org2MSP", "init_ledger", "Org2MSP")  # noqa: E731
    assert code_of(outsider_init) == "already-configured"
    assert as_msp(ledger, WRITER, "init_ledger", WRITER)["replayed"] is True
    fresh = DictState()
    assert code_of(lambda: simulate(fresh, "init_ledger", "Org1MSP", msp="Org2MSP")) == "not-writer"
    bad_name = lambda: simulate(fresh, "init_ledger", "bad msp!", msp="bad msp!")  # noqa: E731
    assert code_of(bad_name) == "bad-argument"


@pytest.mark.parametrize(
    "function,args",
    [
        ("register_client", ["a", h("a")]),
        ("record_checkpoint", ["0", h("w"), "{}"]),
        ("record_generation", ["0", "a", h("x"), h("w")]),
        ("record_forget", ["a", "0", h("w"), "{}", h("x"), "delete", '{"policy": "frozen", "guarantee": "exact"}']),
    ],
)
def test_every_write_needs_the_writer_msp(ledger, function, args):
    assert code_of(lambda: as_msp(ledger, "Org2MSP", function, *args)) == "not-writer"


def test_foreign_values_in_state_are_refused_not_misread():
    # A peer error handed to the contract as data (fabric-chaincode-python 2.5.4 defect).
    state = DictState({"config": b"error: chaincode stream terminated"})
    assert code_of(lambda: simulate(state, "register_client", "a", h("a"))) == "corrupt-state"
    state = DictState({"config": json.dumps({"type": "client"}).encode()})
    assert code_of(lambda: simulate(state, "get_config")) == "corrupt-state"


def test_a_transaction_without_timestamp_is_refused(ledger):
    class NoTimestamp(PeerStub):
        def get_tx_timestamp(self):
            return None

    chaincode = ContractChaincode.new_chaincode(HyperFedContract())
    with ledger.snapshot() as state:
        stub = NoTimestamp(
            state, function="register_client", args=["a", h("a")], tx_id="t", creator_msp=WRITER, timestamp=0.0
        )
        response = asyncio.run(chaincode.invoke(stub))
    assert response.status == 500 and response.message.startswith("[no-timestamp]")


def test_the_contract_has_no_clock_and_no_randomness():
    banned = {"time", "random", "secrets", "uuid", "os", "datetime.now", "datetime.utcnow", "datetime.today", "urandom"}
    for path in CHAINCODE_DIR.glob("*.py"):
        if path.name in ("ccaas.py", "fabric_compat.py"):
            continue  # the server and the import shim are not contract code
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name for a in node.names} & banned, path.name
            if isinstance(node, ast.ImportFrom):
                assert node.module not in banned, path.name
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"now", "utcnow", "today", "urandom"}, path.name


def test_importing_the_contract_pulls_no_torch_no_hyperfed_and_no_logging_config():
    code = (
        "import logging, sys; import chaincode.contract; root = logging.getLogger(); "
        "print(len(root.handlers), root.level, 'torch' in sys.modules, "
        "any(m == 'hyperfed' or m.startswith('hyperfed.') for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=CHAINCODE_DIR.parent, check=True
    ).stdout.split()
    assert out == ["0", "30", "False", "False"]


def test_the_shim_does_not_log_state_values():
    from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub
    from fabric_protos.peer import chaincode_pb2

    class Peer:
        async def handle_put_state(self, *args):
            return None

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        stub = ChaincodeStub(Peer(), "ch", "tx", chaincode_pb2.ChaincodeInput(), None)
        asyncio.run(stub.put_state("k", b"secret-commitment"))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert not [r for r in records if "secret-commitment" in r.getMessage()]


def test_checkpoint_leaves_are_one_key_per_client_and_rechecked_against_the_root(ledger):
    from hyperfed.ledger import Ledger

    typed = Ledger(ledger)
    for cid in ("a", "b", "c"):
        typed.register_client(cid, h(cid))
    typed.record_checkpoint(0, h("w"), {"a": h("a0"), "b": h("b0"), "c": h("c0")})
    with ledger.snapshot() as state:
        leaves = [k for k, _, _ in state.read_range("leaf/", "leaf0")]
    assert leaves == [f"leaf/{0:010d}/{0:06d}/{c}" for c in "abc"]
    assert typed.membership_proof("a", 0).verify()
    forged = json.dumps(
        {"client_id": "b", "commitment": h("forged"), "round": 0, "type": "leaf", "version": 0},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    conn = sqlite3.connect(ledger.path, isolation_level=None)
    conn.execute("UPDATE state SET value = ? WHERE key = ?", (forged, leaves[1]))
    conn.close()
    for call in (lambda: typed.membership_proof("a", 0), lambda: typed.checkpoint_commitments(0)):
        assert code_of(call) == "corrupt-state"


@pytest.mark.parametrize(
    "text",
    [
        '{"policy": "dp", "guarantee": "(ε, δ)-DP", "epsilon": NaN, "delta": 1e-5, "text": ""}',
        '{"policy": "dp", "guarantee": "(ε, δ)-DP", "epsilon": Infinity, "delta": 1e-5, "text": ""}',
        '{"policy": "dp", "guarantee": "(ε, δ)-DP", "epsilon": 1e400, "delta": 1e-5, "text": ""}',
        '{"policy": "dp", "guarantee": "(ε, δ)-DP", "delta": 1e-5, "text": ""}',
        '{"policy": "dp", "guarantee": "(ε, δ)-DP", "epsilon": 1, "delta": 1e-5, "text": "a\\nb"}',
        "[1, 2]",
        "not json",
    ],
)
def test_a_guarantee_the_contract_cannot_store_as_a_finite_claim_is_refused(text):
    from chaincode.records import ContractError, check_guarantee

    with pytest.raises(ContractError, match="bad-argument"):
        check_guarantee(text)
