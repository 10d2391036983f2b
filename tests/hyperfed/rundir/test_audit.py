"""audit_run: passes on a clean run, and every kind of tampering fails it, naming the culprit."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
import torch
from recorded_runs import CLIENTS, ROUNDS, forget_by_purge, record_run
from safetensors.torch import load_file, save_file

from hyperfed.errors import TamperDetectedError
from hyperfed.ledger import EmbeddedLedger
from hyperfed.ledger.salts import SaltStore
from hyperfed.rundir import OPTIMIZER_FILE, RunDirectory
from hyperfed.rundir.audit import audit_run, render
from hyperfed.rundir.recorder import RunRecorder
from hypernet import load_hypernet
from hypernet.io import HYPERNET_WEIGHTS

WEIGHTS_1 = f"checkpoints/round-0001/{HYPERNET_WEIGHTS}"


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """One recorded 2-round run; tests get a copy (``run_dir``) to damage."""
    return record_run(tmp_path_factory.mktemp("clean") / "run")


@pytest.fixture
def run_dir(clean_run, tmp_path):
    shutil.copytree(clean_run.run_dir.root, tmp_path / "run")
    return RunDirectory(tmp_path / "run")


def sql(run_dir, statement, params=()):
    conn = sqlite3.connect(run_dir.ledger_path, isolation_level=None)
    try:
        conn.execute(statement, params)
    finally:
        conn.close()


def edit_tensor(path, pick, delta=1e-3):
    """Add ``delta`` to the first number of the first tensor whose name ``pick`` accepts."""
    tensors = load_file(path)
    name = next(k for k in sorted(tensors) if pick(k))
    tensors[name].view(-1)[0] += delta
    save_file(tensors, path)


def embedding_name(run_dir, round_, client_id):
    """The tensor name of a client's embedding in a checkpoint file."""
    hypernet = load_hypernet(run_dir.checkpoint_dir(round_))
    names = {id(p): n for n, p in hypernet.named_parameters()}
    return names[id(hypernet.clients.parameter(client_id))]


def failed(report):
    return {(f.check, f.status, f.culprit) for f in report.failures()}


# ------------------------------------------------------------------------------- clean


def test_a_clean_run_passes(run_dir):
    report = audit_run(run_dir)
    assert report.ok, render(report)
    counts = report.counts()
    checkpoints, generations = ROUNDS + 1, ROUNDS * len(CLIENTS)
    assert counts == {
        # the ledger; per checkpoint its weights, its config + optimizer digests, its embeddings;
        # the policy run.json states = the one recorded with every checkpoint
        "match": 1 + 2 * checkpoints + checkpoints * len(CLIENTS) + generations + 1,
        "mismatch": 0,
        "missing": 0,
        "forgotten": 0,
    }
    assert {f.check for f in report.findings} == {"ledger", "checkpoint", "embedding", "adapter", "policy"}
    assert json.loads(json.dumps(report.to_dict()))["ok"] is True
    text = render(report)
    assert text.startswith("audit PASSED") and "matched: 1 ledger, 6 checkpoint" in text
    report.raise_if_failed()


def test_the_audit_never_writes_to_the_run(run_dir):
    before = {p: p.read_bytes() for p in run_dir.root.rglob("*") if p.is_file()}
    sql(run_dir, "DELETE FROM blocks")  # even a ledger with no blocks is left as it is
    mtime = run_dir.ledger_path.stat().st_mtime_ns
    assert not audit_run(run_dir).ok
    assert run_dir.ledger_path.stat().st_mtime_ns == mtime
    after = {p for p in run_dir.root.rglob("*") if p.is_file()}
    assert after == set(before)


# ------------------------------------------------------------------ ledger tampering


def test_edited_state_row(run_dir):
    key = "gen/0000000001/alice"
    conn = sqlite3.connect(run_dir.ledger_path, isolation_level=None)
    value = json.loads(conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()[0])
    value["adapter_hash"] = "ab" * 32  # make the ledger vouch for another adapter
    conn.execute(
        "UPDATE state SET value = ? WHERE key = ?",
        (json.dumps(value, sort_keys=True, separators=(",", ":")).encode(), key),
    )
    conn.close()
    report = audit_run(run_dir)
    assert not report.ok
    assert ("ledger", "mismatch", f"ledger.db: state '{key}'") in failed(report)
    assert ("adapter", "mismatch", "adapters/round-0001/alice.safetensors") in failed(report)
    with pytest.raises(TamperDetectedError, match="gen/0000000001/alice"):
        report.raise_if_failed()


def test_state_row_replaced_by_garbage_is_reported_not_raised(run_dir):
    sql(run_dir, "UPDATE state SET value = ? WHERE key = 'client/bob'", (b'{"type":"client"}',))
    report = audit_run(run_dir)
    assert ("ledger", "mismatch", "ledger.db: state 'client/bob'") in failed(report)
    assert ("ledger", "mismatch", "ledger: list_clients") in failed(report)


def test_deleted_block(run_dir):
    sql(run_dir, "DELETE FROM blocks WHERE number = 6")
    report = audit_run(run_dir)
    assert ("ledger", "missing", "ledger.db: block 6") in failed(report)


def test_swapped_blocks(run_dir):
    conn = sqlite3.connect(run_dir.ledger_path, isolation_level=None)
    two, three = (conn.execute("SELECT * FROM blocks WHERE number = ?", (n,)).fetchone() for n in (2, 3))
    conn.execute("BEGIN")
    conn.execute("DELETE FROM blocks WHERE number IN (2, 3)")
    marks = ", ".join("?" * len(two))
    conn.execute(f"INSERT INTO blocks VALUES ({marks})", (2, *three[1:]))
    conn.execute(f"INSERT INTO blocks VALUES ({marks})", (3, *two[1:]))
    conn.execute("COMMIT")
    conn.close()
    culprits = audit_run(run_dir).culprits()
    assert {"ledger.db: block 2", "ledger.db: block 3"} <= set(culprits)


def test_cleanly_truncated_chain_is_caught_by_the_head_anchor(run_dir):
    with EmbeddedLedger(run_dir.ledger_path) as ledger:
        tip = ledger.blocks()[-2:]  # round 2's checkpoint and its files record
    assert [b.function for b in tip] == ["record_checkpoint", "record_checkpoint_files"]
    for last in tip:
        sql(run_dir, "DELETE FROM blocks WHERE number = ?", (last.number,))
        for key in last.decoded_writes():
            sql(run_dir, "DELETE FROM history WHERE key = ? AND block = ?", (key, last.number))
        for key in [k for k in last.decoded_writes() if k.startswith(("ckpt/", "leaf/", "weights/", "files/"))]:
            sql(run_dir, "DELETE FROM state WHERE key = ?", (key,))
    last = tip[-1]  # the anchored head
    head = b'{"round":1,"type":"head","version":0}'
    sql(run_dir, "UPDATE state SET value = ? WHERE key = 'head'", (head,))
    report = audit_run(run_dir)
    assert ("ledger", "missing", f"ledger.db: block {last.number}") in failed(report)
    assert ("checkpoint", "missing", f"ledger: checkpoint of round {ROUNDS}") in failed(report)


def test_missing_head_anchor(run_dir):
    run_dir.ledger_head_path.unlink()
    assert ("ledger", "missing", "ledger_head.json") in failed(audit_run(run_dir))


# ------------------------------------------------------------------- file tampering


def test_altered_adapter_file(run_dir):
    path = run_dir.adapter_path(2, "bob")
    edit_tensor(path, lambda name: "lora_B" in name)
    report = audit_run(run_dir)
    assert failed(report) == {("adapter", "mismatch", "adapters/round-0002/bob.safetensors")}
    assert "recorded in block" in report.failures()[0].message


def test_deleted_adapter_file(run_dir):
    run_dir.adapter_path(1, "org/carol").unlink()
    assert failed(audit_run(run_dir)) == {("adapter", "missing", "adapters/round-0001/org%2Fcarol.safetensors")}


def test_altered_checkpoint_weights(run_dir):
    path = run_dir.checkpoint_dir(1) / HYPERNET_WEIGHTS
    edit_tensor(path, lambda name: name.startswith("trunk."))
    report = audit_run(run_dir)
    assert failed(report) == {("checkpoint", "mismatch", WEIGHTS_1)}
    assert "shared weights hash" in report.failures()[0].message


def test_altered_embedding_in_a_checkpoint(run_dir):
    path = run_dir.checkpoint_dir(1) / HYPERNET_WEIGHTS
    bob = embedding_name(run_dir, 1, "bob")
    edit_tensor(path, lambda name: name == bob)
    report = audit_run(run_dir)
    # the file no longer matches its own hypernet.json either (weights_sha256)
    assert failed(report) == {("embedding", "mismatch", WEIGHTS_1), ("checkpoint", "mismatch", WEIGHTS_1)}
    (embedding,) = [f for f in report.failures() if f.check == "embedding"]
    assert "'bob'" in embedding.message  # the other clients still verify
    assert (
        sum(f.check == "embedding" and f.status == "match" for f in report.findings) == (ROUNDS + 1) * len(CLIENTS) - 1
    )


def test_deleted_salt(run_dir):
    SaltStore(run_dir.salts_path).destroy("bob")
    report = audit_run(run_dir)
    assert failed(report) == {("salt", "missing", "secrets/salts.json")}
    assert "'bob'" in report.failures()[0].message


def test_records_left_in_the_outbox_are_reported(run_dir):
    conn = sqlite3.connect(run_dir.outbox_path, isolation_level=None)
    conn.execute("UPDATE outbox SET status = 'pending' WHERE seq = (SELECT MAX(seq) FROM outbox)")
    conn.close()
    assert ("outbox", "missing", "outbox.db") in failed(audit_run(run_dir))


# ------------------------------------------------------------------------ forgetting


@pytest.fixture
def forgotten_run(clean_run, run_dir):
    """A copy of the clean run whose live objects act on the copy, ready to forget bob."""
    server = clean_run.server
    hypernet = server.hypernet
    saved = {c: hypernet.clients.parameter(c).detach().clone() for c in hypernet.client_ids}
    run = type(clean_run)(
        run_dir, server, clean_run.model, clean_run.clients, clean_run.config, RunRecorder.open(run_dir)
    )
    yield run
    run.recorder.close()
    for cid, vector in saved.items():  # give the module's clean run its clients back
        if cid not in hypernet.clients:
            server.trainer.add_client(cid, vector)


def test_audit_after_a_purge_verifies_everything_else_through_proofs(forgotten_run):
    forget_by_purge(forgotten_run, "bob", ROUNDS)
    forgotten_run.recorder.close()
    rd = forgotten_run.run_dir
    report = audit_run(rd)
    assert report.ok, render(report)
    assert report.forgotten == ("bob",)
    (gone,) = [f for f in report.findings if f.status == "forgotten"]
    assert gone.culprit == "client 'bob'" and f"round {ROUNDS}" in gone.message
    # the historical checkpoints still commit to bob on the chain: the others verify by proof
    matched = [f for f in report.findings if f.check == "embedding" and f.status == "match"]
    assert len(matched) == (ROUNDS + 1) * (len(CLIENTS) - 1)
    assert all("over 3 leaves" in f.message for f in matched if "round-0001" in f.culprit)
    assert all("over 2 leaves" in f.message for f in matched if f"round-000{ROUNDS}" in f.culprit)
    assert "forgotten clients: bob" in render(report)
    assert b"bob" not in rd.salts_path.read_bytes()
    assert not [p for p in rd.root.rglob("bob.safetensors")]


@pytest.mark.parametrize(
    "skip,culprit",
    [
        ("checkpoint", ("embedding", "mismatch", WEIGHTS_1)),
        ("optimizer", ("embedding", "mismatch", f"checkpoints/round-0001/{OPTIMIZER_FILE}")),
        ("salt", ("salt", "mismatch", "secrets/salts.json")),
        ("adapter", ("adapter", "mismatch", "adapters/round-0001/bob.safetensors")),
    ],
)
def test_an_incomplete_erasure_fails_and_names_what_is_left(forgotten_run, skip, culprit):
    forget_by_purge(forgotten_run, "bob", ROUNDS, skip=skip)
    forgotten_run.recorder.close()
    report = audit_run(forgotten_run.run_dir)
    assert culprit in failed(report)
    assert "'bob'" in " ".join(f.message for f in report.failures())
    assert report.forgotten == ("bob",)


def test_audit_reads_the_ledger_url_of_run_json(run_dir, tmp_path):
    moved = tmp_path / "elsewhere" / "ledger.db"
    moved.parent.mkdir()
    shutil.move(run_dir.ledger_path, moved)
    for suffix in ("-wal", "-shm"):
        side = run_dir.root / f"ledger.db{suffix}"
        if side.exists():
            shutil.move(side, moved.parent / side.name)
    assert ("ledger", "missing", "ledger.db") in failed(audit_run(run_dir))
    run_dir.write_json(run_dir.config_path, {"ledger": {"url": f"sqlite://{moved}"}})
    report = audit_run(run_dir)
    assert report.ok, render(report)
    assert report.ledger == str(moved)
    torch.manual_seed(0)  # keep later tests' global RNG independent of this one
