"""RunRecorder: every registration, checkpoint and generation reaches the ledger once, in
order, with the files it describes — also when the ledger is down for a while."""

from __future__ import annotations

import json
import stat

import pytest
import torch
from recorded_runs import CLIENTS, ROUNDS, SwitchableLedger, record_run, start_run, train

from hyperfed.errors import ForgottenClientError
from hyperfed.ledger import EmbeddedLedger, Ledger, commitments_root
from hyperfed.rundir.audit import audit_run
from hyperfed.rundir.fingerprints import embedding_commitment, read_checkpoint_tensors
from hyperfed.rundir.recorder import RunRecorder, shared_weights_hash
from hypernet import adapter_hash

WRITER = "HyperFedMSP"
GENERATIONS = ["record_generation"] * len(CLIENTS)
CHECKPOINT = ["record_checkpoint", "record_checkpoint_files"]  # weights, then config + optimizer
ONE_ROUND = GENERATIONS + CHECKPOINT


@pytest.fixture
def run(tmp_path):
    return record_run(tmp_path / "run")


def test_every_record_lands_in_order(run):
    with EmbeddedLedger(run.run_dir.ledger_path) as backend:
        functions = [b.function for b in backend.blocks()]
        head = backend.head()
        ledger = Ledger(backend)
        clients = [c.client_id for c in ledger.list_clients()]
        checkpoints = ledger.list_checkpoints()
        generations = ledger.list_generations()
        last_commitments = ledger.checkpoint_commitments(ROUNDS)
    assert functions == (["init_ledger"] + ["register_client"] * len(CLIENTS) + CHECKPOINT + ONE_ROUND * ROUNDS)
    assert clients == sorted(CLIENTS)
    assert [(c.round, c.version, c.client_ids) for c in checkpoints] == [
        (r, 0, tuple(sorted(CLIENTS))) for r in range(ROUNDS + 1)
    ]
    # each adapter is recorded against the checkpoint it was generated from
    assert [(g.round, g.client_id, g.checkpoint_round) for g in generations] == [
        (r, c, r - 1) for r in range(1, ROUNDS + 1) for c in sorted(CLIENTS)
    ]
    for g in generations:
        assert adapter_hash(run.run_dir.load_adapter(g.round, g.client_id)) == g.adapter_hash
    hypernet = run.server.hypernet
    assert checkpoints[-1].weights_hash == shared_weights_hash(hypernet)
    salts = {c: run.recorder.salts.salt(c) for c in CLIENTS}
    assert last_commitments == {c: embedding_commitment(hypernet.clients.parameter(c), salts[c]) for c in CLIENTS}
    assert checkpoints[-1].merkle_root == commitments_root(last_commitments)
    anchor = json.loads(run.run_dir.ledger_head_path.read_text())
    assert anchor == {"number": head[0], "hash": head[1]}


def test_checkpoint_commitments_follow_the_trained_embeddings(run):
    with EmbeddedLedger(run.run_dir.ledger_path) as backend:
        ledger = Ledger(backend)
        registered = {c.client_id: c.commitment for c in ledger.list_clients()}
        per_round = [ledger.checkpoint_commitments(r) for r in range(ROUNDS + 1)]
    assert per_round[0] == registered  # round 0 holds the embeddings clients registered with
    for cid in CLIENTS:  # training moved every embedding (round 1 only moves LoRA B: ΔW = 0
        assert per_round[-1][cid] != per_round[0][cid]  # gives embeddings no gradient yet)


def test_shared_weights_hash_covers_shared_weights_only(run):
    hypernet = run.server.hypernet
    before = shared_weights_hash(hypernet)
    assert before == read_checkpoint_tensors(run.run_dir.checkpoint_dir(ROUNDS)).shared_hash
    with torch.no_grad():
        hypernet.clients.parameter("alice").add_(1.0)
        hypernet.add_client("newcomer")
    assert shared_weights_hash(hypernet) == before
    with torch.no_grad():
        hypernet.shared_parameters()[0].view(-1)[0] += 1e-3
    assert shared_weights_hash(hypernet) != before


def test_salts_are_secret_files_and_never_reach_the_ledger(run):
    path = run.run_dir.salts_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    salts = [run.recorder.salts.salt(c).hex() for c in CLIENTS]
    ledger_bytes = run.run_dir.ledger_path.read_bytes()
    assert not any(salt.encode() in ledger_bytes for salt in salts)


def test_records_wait_while_the_ledger_is_down_then_flush_in_order_once(tmp_path):
    backend = SwitchableLedger(tmp_path / "run" / "ledger.db", writer_msp=WRITER, msp_id=WRITER)
    run = start_run(tmp_path / "run", Ledger(backend))
    committed = backend.head()[0]
    backend.mode = "down"
    train(run)
    recorder = run.recorder
    assert recorder.pending() == len(ONE_ROUND) * ROUNDS
    assert backend.head()[0] == committed  # nothing reached the ledger...
    assert len(run.run_dir.adapter_clients(ROUNDS)) == len(CLIENTS)  # ...but every file is saved
    queued = [(e.function, e.args) for e in recorder.ledger.outbox.entries("pending")]

    backend.mode = "up"
    report = recorder.flush()
    assert (report.sent, report.pending, report.rejected) == (len(queued), 0, ())
    sent = [(b.function, tuple(b.decoded_args())) for b in backend.blocks(committed + 1)]
    assert sent == queued  # in the order they were recorded, each exactly once
    recorder.close()
    assert audit_run(run.run_dir, ledger=Ledger(backend)).ok
    backend.close()


def test_a_new_record_goes_behind_the_backlog(tmp_path):
    backend = SwitchableLedger(tmp_path / "run" / "ledger.db", writer_msp=WRITER, msp_id=WRITER)
    run = start_run(tmp_path / "run", Ledger(backend))
    backend.mode = "down"
    train(run, 1, 1)
    backend.mode = "up"
    train(run, 2, 2)  # the first write of round 2 sends round 1's records first
    assert run.recorder.pending() == 0
    functions = [b.function for b in backend.blocks()]
    assert functions[-2 * len(ONE_ROUND) :] == ONE_ROUND * 2
    assert [g.round for g in Ledger(backend).list_generations()] == [1] * 3 + [2] * 3
    run.recorder.close()
    backend.close()


def test_a_lost_reply_is_resent_and_recorded_once(tmp_path):
    backend = SwitchableLedger(tmp_path / "run" / "ledger.db", writer_msp=WRITER, msp_id=WRITER)
    run = start_run(tmp_path / "run", Ledger(backend))
    backend.mode = "lose-reply"  # every record of round 1 commits but looks failed
    train(run, 1, 1)
    assert run.recorder.pending() >= 1
    backend.mode = "up"
    run.recorder.flush()
    entries = run.recorder.ledger.outbox.entries()
    assert all(e.status == "sent" for e in entries)
    first = next(e for e in entries if e.function == "record_generation")
    assert first.attempts > 1 and json.loads(first.payload)["replayed"] is True
    # a resent record is a replay: a block with no writes; the state changed once
    writers = [b.function for b in backend.blocks() if b.decoded_writes()]
    assert writers.count("record_generation") == len(CLIENTS)
    assert writers.count("record_checkpoint") == 2  # rounds 0 and 1
    run.recorder.close()
    assert audit_run(run.run_dir, ledger=Ledger(backend)).ok
    backend.close()


def test_queued_records_survive_a_restart(tmp_path):
    root = tmp_path / "run"
    backend = SwitchableLedger(root / "ledger.db", writer_msp=WRITER, msp_id=WRITER)
    run = start_run(root, Ledger(backend))
    backend.mode = "down"
    train(run)
    run.recorder.close()  # the process ends with records still queued
    backend.close()
    assert audit_run(root).culprits() == [
        "ledger: checkpoint of round 1",
        "ledger: checkpoint of round 2",
        "ledger: generation (1, 'alice')",
        "ledger: generation (1, 'bob')",
        "ledger: generation (1, 'org/carol')",
        "ledger: generation (2, 'alice')",
        "ledger: generation (2, 'bob')",
        "ledger: generation (2, 'org/carol')",
        "outbox.db",
    ]
    with RunRecorder.open(root) as recorder:  # a new process on the same run
        assert recorder.pending() == len(ONE_ROUND) * ROUNDS
        assert recorder.flush().drained
    assert audit_run(root).ok


def test_registration_is_idempotent_and_late_joiners_are_registered(run):
    recorder = RunRecorder.open(run.run_dir)
    hypernet = run.server.hypernet
    receipts = recorder.register_clients(CLIENTS, hypernet)  # again, after training moved them
    assert all(r.committed for r in receipts)
    run.server.register(["dave"])  # joins mid-run
    recorder.record_checkpoint(ROUNDS + 1, hypernet, run.server.trainer)
    with EmbeddedLedger(run.run_dir.ledger_path) as backend:
        functions = [b.function for b in backend.blocks()]
        assert [c.client_id for c in Ledger(backend).list_clients()] == sorted([*CLIENTS, "dave"])
    assert functions.count("register_client") == len(CLIENTS) + 1
    assert functions[-3:] == ["register_client", *CHECKPOINT]
    recorder.close()
    assert audit_run(run.run_dir).ok


def test_a_forgotten_client_cannot_be_registered_again(run):
    from recorded_runs import forget_by_purge

    recorder = run.recorder = RunRecorder.open(run.run_dir)
    forget_by_purge(run, "bob", ROUNDS)
    run.server.register(["bob"])  # someone tries to bring the id back
    with pytest.raises(ForgottenClientError):
        recorder.register_clients(["bob"], run.server.hypernet)
    assert "bob" not in recorder.salts  # the salt drawn for the attempt is destroyed again
    recorder.close()


def test_recording_through_the_fabric_gateway_client(tmp_path):
    from hyperfed.ledger.devnet import connect_local_gateway

    root = tmp_path / "run"
    gateway = connect_local_gateway(tmp_path / "peer" / "ledger.db", msp_id=WRITER)
    try:
        run = start_run(root, Ledger(gateway))
        train(run, 1, 1)
        assert run.recorder.pending() == 0
        run.recorder.close()
        ledger = Ledger(gateway)
        assert [c.round for c in ledger.list_checkpoints()] == [0, 1]
        report = audit_run(root, ledger=ledger)
    finally:
        gateway.close()
    assert report.ok, report.failures()
    assert any("not embedded" in note for note in report.notes)
    assert not run.run_dir.ledger_head_path.exists()  # the network keeps its own chain
