"""One set of ledger behaviours, run against every backend in ``conftest.BACKEND_FACTORIES``."""

from __future__ import annotations

import contextlib
import hashlib
import json

import pytest

from hyperfed.errors import ContractViolationError, LedgerError, UnknownClientError
from hyperfed.ledger import Ledger, commitments_root, violation_code

WRITER = "HyperFedMSP"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


COMMITMENTS = {"alice": h("c-alice"), "bob": h("c-bob"), "carol": h("c-carol")}
# Embeddings move during training: round 1's commitments differ from the registered ones.
ROUND1 = {cid: h(f"c-{cid}-round-1") for cid in COMMITMENTS}
DP_GUARANTEE = {
    "policy": "dp",
    "guarantee": "(ε, δ)-DP",
    "epsilon": 6.29,
    "delta": 1e-5,
    "epsilon_known_participation": 10.2,
    "text": "client-level (ε = 6.29, δ = 1e-05)-DP of the shared weights",
}


@pytest.fixture
def ledger(backend):
    return Ledger(backend)


@pytest.fixture
def trained(ledger):
    """Three clients, the initial weights as round 0, one generation each in round 1."""
    for cid, commitment in COMMITMENTS.items():
        ledger.register_client(cid, commitment)
    ledger.record_checkpoint(0, h("w0"), COMMITMENTS)
    for cid in COMMITMENTS:
        ledger.record_generation(1, cid, h(f"adapter-{cid}-1"), h("w0"))
    ledger.record_checkpoint(1, h("w1"), ROUND1)
    return ledger


@contextlib.contextmanager
def refused(code: str):
    """The block must raise ContractViolationError carrying this refusal code."""
    with pytest.raises(ContractViolationError) as info:
        yield info
    assert violation_code(info.value) == code, str(info.value)


def forget_alice(ledger, round_no=1, **overrides):
    rest = {k: v for k, v in ROUND1.items() if k != "alice"}
    args = dict(
        client_id="alice",
        round=round_no,
        new_checkpoint_hash=h("w1-no-alice"),
        commitments=rest,
        adapters_root=h("adapters"),
        mode="delete",
        guarantee=DP_GUARANTEE,
    )
    args.update(overrides)
    return ledger.record_forget(**args)


def test_config_names_the_writer(ledger):
    assert ledger.config().writer_msp == WRITER


def test_register_then_read_back(ledger):
    receipt = ledger.register_client("alice", COMMITMENTS["alice"])
    assert receipt.committed and not receipt.replayed
    client = ledger.get_client("alice")
    assert (client.client_id, client.commitment) == ("alice", COMMITMENTS["alice"])
    assert client.status == "active" and not client.forgotten
    assert client.registered_tx == receipt.record["registered_tx"]


def test_identical_write_is_a_replay_not_a_second_record(ledger):
    first = ledger.register_client("alice", COMMITMENTS["alice"])
    again = ledger.register_client("alice", COMMITMENTS["alice"])
    assert again.replayed and again.record["registered_tx"] == first.record["registered_tx"]
    assert [c.client_id for c in ledger.list_clients()] == ["alice"]


def test_register_with_another_commitment_is_refused(ledger):
    ledger.register_client("alice", COMMITMENTS["alice"])
    with refused("duplicate-client"):
        ledger.register_client("alice", h("other"))


def test_unknown_client_query(ledger):
    with pytest.raises(UnknownClientError):
        ledger.get_client("nobody")
    with pytest.raises(UnknownClientError):
        ledger.client_history("nobody")


def test_generation_for_unknown_client_is_refused(trained):
    with refused("unknown-client"):
        trained.record_generation(2, "mallory", h("a"), h("w1"))


def test_generation_must_come_from_a_recorded_checkpoint(trained):
    with refused("unknown-checkpoint"):
        trained.record_generation(2, "alice", h("a"), h("never-recorded"))
    with refused("round-order"):  # w1 was first recorded at round 1
        trained.record_generation(0, "alice", h("a"), h("w1"))


def test_one_generation_per_client_per_round(trained):
    with refused("duplicate-generation"):
        trained.record_generation(1, "alice", h("different-adapter"), h("w0"))
    assert trained.record_generation(1, "alice", h("adapter-alice-1"), h("w0")).replayed


def test_checkpoint_rounds_move_forward(trained):
    with refused("round-order"):
        trained.record_checkpoint(1, h("w1b"), ROUND1)
    with refused("round-order"):
        trained.record_checkpoint(0, h("w0b"), COMMITMENTS)
    with refused("round-order"):  # same round and weights, other embeddings: not a replay
        trained.record_checkpoint(1, h("w1"), COMMITMENTS)
    again = trained.record_checkpoint(1, h("w1"), ROUND1)
    assert again.replayed
    trained.record_checkpoint(10, h("w10"), ROUND1)
    # zero-padded keys: round 10 sorts after round 2 and 1
    assert [(c.round, c.version) for c in trained.list_checkpoints()] == [(0, 0), (1, 0), (10, 0)]


def test_checkpoint_stores_the_root_of_its_own_commitments(trained):
    ckpt = trained.get_checkpoint(1)
    assert ckpt.merkle_root == commitments_root(ROUND1) != commitments_root(COMMITMENTS)
    assert ckpt.client_ids == tuple(sorted(COMMITMENTS))
    assert trained.checkpoint_commitments(1) == ROUND1
    assert trained.checkpoint_commitments(0) == COMMITMENTS
    receipt = trained.record_checkpoint(2, h("w2"), {"bob": h("b2")})  # a subset is fine
    assert receipt.record["merkle_root"] == commitments_root({"bob": h("b2")})


def test_checkpoint_lists_only_registered_live_clients(trained):
    with refused("unknown-client"):
        trained.record_checkpoint(2, h("w2"), dict(ROUND1, zed=h("zed")))
    with refused("bad-argument"):
        trained.record_checkpoint(2, h("w2"), {"bob": "not-a-hash"})
    with refused("bad-argument"):  # the old signature's client list is not a mapping
        trained.backend.submit("record_checkpoint", "2", h("w2"), '["bob"]')


def test_forget_is_final(trained):
    receipt = forget_alice(trained)
    assert receipt.committed and receipt.record["version"] == 1
    assert trained.get_client("alice").forgotten
    with refused("forgotten-client"):
        trained.record_generation(2, "alice", h("a"), h("w1-no-alice"))
    with refused("forgotten-client"):
        trained.register_client("alice", COMMITMENTS["alice"])
    with refused("forgotten-client"):
        forget_alice(trained, new_checkpoint_hash=h("yet-another"))
    assert forget_alice(trained).replayed  # an identical retry writes nothing
    rest = {k: v for k, v in ROUND1.items() if k != "alice"}
    with refused("forgotten-client"):
        trained.record_checkpoint(2, h("w2"), ROUND1)
    trained.record_checkpoint(2, h("w2"), rest)


def test_forget_records_a_new_checkpoint_version_of_the_current_round(trained):
    forget_alice(trained)
    records = trained.round_records(1)
    assert [(c.version, c.kind) for c in records.checkpoints] == [(0, "train"), (1, "forget")]
    latest = trained.latest_checkpoint()
    assert (latest.round, latest.version, latest.forgotten_client) == (1, 1, "alice")
    assert trained.get_checkpoint(1).version == 1 and trained.get_checkpoint(1, 0).version == 0
    (event,) = trained.forget_events()
    assert (event.client_id, event.mode) == ("alice", "delete")
    assert event.remaining_client_ids == ("bob", "carol")
    assert event.merkle_root == latest.merkle_root == commitments_root({k: ROUND1[k] for k in ("bob", "carol")})
    assert trained.checkpoint_commitments(1) == {k: ROUND1[k] for k in ("bob", "carol")}
    carol = {"carol": ROUND1["carol"]}
    with refused("round-order"):
        forget_alice(trained, client_id="bob", round_no=0, commitments=carol)


def test_forget_records_its_guarantee_and_refuses_a_malformed_one(trained):
    for bad in (
        {**DP_GUARANTEE, "guarantee": "probably"},
        {**DP_GUARANTEE, "epsilon": -1.0},
        {**DP_GUARANTEE, "delta": True},
        {**DP_GUARANTEE, "note": "extra key"},
        {k: v for k, v in DP_GUARANTEE.items() if k != "policy"},
    ):
        with refused("bad-argument"):
            forget_alice(trained, guarantee=bad)
    assert trained.get_client("alice").status == "active"  # a refused forget changed nothing
    forget_alice(trained)
    (event,) = trained.forget_events()
    assert event.guarantee == DP_GUARANTEE
    assert trained.client_history("alice").forget.guarantee["epsilon"] == 6.29
    with refused("forgotten-client"):  # the same forget stating another guarantee is not a replay
        forget_alice(trained, guarantee={**DP_GUARANTEE, "epsilon": 1.0})


def test_forget_rejects_commitments_that_still_count_the_client(trained):
    with refused("bad-argument"):
        forget_alice(trained, commitments=ROUND1)
    with refused("unknown-client"):
        forget_alice(trained, commitments={"bob": ROUND1["bob"], "zed": h("zed")})


def test_regeneration_after_a_forget_may_replace_a_rounds_adapter(trained):
    forget_alice(trained)
    receipt = trained.record_generation(1, "bob", h("bob-regenerated"), h("w1-no-alice"))
    assert receipt.record["checkpoint_version"] == 1
    history = trained.client_history("bob")
    assert [g.adapter_hash for g in history.generations] == [h("bob-regenerated")]
    assert [(g.round, g.client_id, g.checkpoint_version) for g in trained.list_generations()] == [
        (1, "alice", 0),
        (1, "bob", 1),
        (1, "carol", 0),
    ]


def test_membership_proofs(trained):
    proof = trained.membership_proof("bob", 1)
    assert proof.verify(expected_root=commitments_root(ROUND1))
    assert proof.commitment == ROUND1["bob"] and proof.size == 3
    assert trained.membership_proof("bob", 0).commitment == COMMITMENTS["bob"]
    forget_alice(trained)
    with refused("not-in-checkpoint"):
        trained.membership_proof("alice", 1)  # latest version of round 1 no longer has her
    assert trained.membership_proof("alice", 1, version=0).verify()
    after = trained.membership_proof("bob", 1)
    assert (after.version, after.size) == (1, 2) and after.verify()


def test_client_history_lists_changes_newest_first(trained):
    forget_alice(trained)
    history = trained.client_history("alice")
    assert [c.value.status for c in history.changes] == ["forgotten", "active"]
    assert history.forget is not None and history.forget.round == 1
    assert [g.round for g in history.generations] == [1]


def test_evaluate_never_writes(backend):
    payload = backend.evaluate("register_client", "ghost", h("ghost"))
    assert json.loads(payload)["record"]["client_id"] == "ghost"
    with pytest.raises(UnknownClientError):
        Ledger(backend).get_client("ghost")


def test_bad_arguments_are_refused_with_a_reason(ledger):
    with refused("bad-argument"):
        ledger.register_client("alice", "not-a-hash")
    with refused("bad-argument"):
        ledger.register_client(" alice", h("x"))
    with refused("bad-argument"):
        ledger.record_checkpoint(-1, h("w"), {})


def test_unknown_function_is_a_contract_violation(backend):
    with pytest.raises(ContractViolationError):
        backend.submit("mint_tokens", "1")


def test_close_is_idempotent(backend):
    backend.close()
    backend.close()
    with pytest.raises(LedgerError, match="closed"):  # a closed backend says so, typed
        backend.evaluate("get_config")
