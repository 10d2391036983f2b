"""The tamper table of issue 10: each row damages a copy of a tiny recorded run one way, and
the audit must fail *naming* the damage (check, status, culprit). Plus: the audit writes
nothing (every byte of every file, SQLite side files included), a re-signed chain passes
only without a trusted certificate, and queries are never appended."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from recorded_runs import CLIENTS, ROUNDS, forget_by_purge, start_run, train
from safetensors.torch import load_file, save_file

from hyperfed.errors import ContractViolationError
from hyperfed.ledger import EmbeddedLedger
from hyperfed.ledger.devnet.pki import self_signed_identity
from hyperfed.ledger.embedded.chain import block_hash, encode_writes
from hyperfed.ledger.embedded.identity import dev_identity_dir
from hyperfed.ledger.gateway.identity import SigningIdentity
from hyperfed.rundir import OPTIMIZER_FILE, RunDirectory
from hyperfed.rundir.audit import audit_run, render
from hypernet import adapter_hash

WRITER = "HyperFedMSP"
CKPT_1 = "checkpoints/round-0001"
ALICE_1 = "adapters/round-0001/alice.safetensors"


@pytest.fixture(scope="module")
def trusted_cert():
    """The writer's certificate as an auditor keeps it: the session's dev identity."""
    return dev_identity_dir(WRITER) / "cert.pem"


def _metrics(clients) -> dict:
    return {"base": {c: 1.5 for c in clients}, "final": {"hyperlora": {c: 1.25 for c in clients}}}


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    """A recorded 2-round run with a metrics.json (the tiny recorder run writes none)."""
    run = start_run(tmp_path_factory.mktemp("tamper") / "run")
    train(run)
    run.recorder.close()
    run.run_dir.write_json(run.run_dir.metrics_path, _metrics(CLIENTS))
    return run.run_dir.root


@pytest.fixture(scope="module")
def forgotten_root(tmp_path_factory):
    """The same, with bob forgotten (delete, by the purge the audit tests use)."""
    run = start_run(tmp_path_factory.mktemp("tamper-forgotten") / "run")
    train(run)
    forget_by_purge(run, "bob", ROUNDS)
    run.recorder.close()
    run.run_dir.write_json(run.run_dir.metrics_path, _metrics([c for c in CLIENTS if c != "bob"]))
    return run.run_dir.root


def copy_of(root, tmp_path) -> RunDirectory:
    shutil.copytree(root, tmp_path / "run")
    return RunDirectory(tmp_path / "run")


def failed(report) -> set[tuple[str, str, str]]:
    return {(f.check, f.status, f.culprit) for f in report.failures()}


# -------------------------------------------------------------------------- tamperings


def flip_byte(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def edit_json(path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def plant_journal(text: str) -> Callable[[RunDirectory], None]:
    return lambda rd: (rd.root / "forget_journal.json").write_text(text)


def resign(rd: RunDirectory, identity: SigningIdentity) -> None:
    """Sign every block with ``identity`` and record its certificate as the writer's."""
    conn = sqlite3.connect(rd.ledger_path, isolation_level=None)
    for number, digest in conn.execute("SELECT number, hash FROM blocks").fetchall():
        signature = base64.b64encode(identity.sign(digest.encode("ascii"))).decode()
        conn.execute("UPDATE blocks SET signature = ? WHERE number = ?", (signature, number))
    conn.execute("UPDATE ledger_meta SET value = ? WHERE name = 'writer_cert'", (identity.certificate_pem.decode(),))
    conn.close()


def reforge(rd: RunDirectory, resign_as: SigningIdentity | None = None) -> None:
    """Issue 10 #8, exactly: swap alice's round-1 adapter for another file, make its generation
    record vouch for the new file (state, block args and write set), recompute every block
    hash and link from there, and rewrite ``ledger_head.json``. ``resign_as``: also re-sign
    every block with another key (all an attacker without the writer's key can do)."""
    path = rd.adapter_path(1, "alice")
    forged = {k: v + 1e-3 for k, v in load_file(path).items()}
    save_file(forged, path)
    new_hash = adapter_hash(forged)
    conn = sqlite3.connect(rd.ledger_path, isolation_level=None)
    conn.execute("BEGIN")
    rows = [list(r) for r in conn.execute("SELECT * FROM blocks ORDER BY number")]
    prev = None
    for row in rows:
        number, function, args = row[0], row[3], json.loads(row[4])
        if function == "record_generation" and args[:2] == ["1", "alice"]:
            old_hash, args[2] = args[2], new_hash
            writes = {}
            for key, value in json.loads(row[7]):
                record = base64.b64decode(value).replace(old_hash.encode(), new_hash.encode())
                writes[key] = record
                conn.execute("UPDATE state SET value = ? WHERE key = ?", (record, key))
            row[4], row[7] = json.dumps(args), encode_writes(writes)
        if prev is not None:
            row[1] = prev
        row[8] = prev = block_hash(*row[:8])
        conn.execute(
            "UPDATE blocks SET prev_hash = ?, args = ?, writes = ?, hash = ? WHERE number = ?",
            (row[1], row[4], row[7], row[8], number),
        )
    conn.execute("COMMIT")
    conn.close()
    rd.write_json(rd.ledger_head_path, {"number": rows[-1][0], "hash": rows[-1][8]})
    if resign_as is not None:
        resign(rd, resign_as)


def mallory() -> SigningIdentity:
    issued = self_signed_identity(WRITER, "mallory")
    return SigningIdentity(WRITER, issued.cert_pem, issued.private_key)


def append_query_block(rd: RunDirectory) -> None:
    """What issue 10 #11 let through: an empty block of a query function at the tip."""
    conn = sqlite3.connect(rd.ledger_path, isolation_level=None)
    number, prev = conn.execute("SELECT number, hash FROM blocks ORDER BY number DESC").fetchone()
    body = (number + 1, prev, "q" * 64, "list_clients", "[]", WRITER, 1.0, "[]")
    conn.execute("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '')", (*body, block_hash(*body)))
    conn.close()
    rd.write_json(rd.ledger_head_path, {"number": body[0], "hash": block_hash(*body)})


@dataclass(frozen=True)
class Tampering:
    name: str
    act: Callable[[RunDirectory], None]
    caught: tuple[str, str, str]  # (check, status, culprit) the audit must report
    forgotten: bool = False  # on the run where bob was forgotten
    trusted: bool = False  # audit with the writer's certificate


def _optimizer_data_byte(rd: RunDirectory) -> None:
    flip_byte(rd.checkpoint_dir(1) / OPTIMIZER_FILE, -1)  # the last byte: tensor data, header intact


def _weights_and_metadata(rd: RunDirectory) -> None:
    """Flip a weight and update weights_sha256 so the checkpoint still loads."""
    weights = rd.checkpoint_dir(1) / "hypernet.safetensors"
    tensors = load_file(weights)
    name = next(k for k in sorted(tensors) if k.startswith("trunk."))
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, weights)
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    edit_json(rd.checkpoint_dir(1) / "hypernet.json", lambda m: m.update(weights_sha256=digest))


TAMPERINGS = [
    Tampering(
        "metrics.json: a flipped byte breaks it",
        lambda rd: flip_byte(rd.metrics_path, 0),
        ("metrics", "mismatch", "metrics.json"),
    ),
    Tampering(
        "metrics.json: a flipped byte in a client id",
        lambda rd: rd.metrics_path.write_text(rd.metrics_path.read_text().replace('"alice"', '"alicf"')),
        ("metrics", "mismatch", "metrics.json"),
    ),
    Tampering(
        "metrics.json: a forgotten client's losses put back",
        lambda rd: edit_json(rd.metrics_path, lambda m: m["base"].update(bob=1.4)),
        ("metrics", "mismatch", "metrics.json"),
        forgotten=True,
    ),
    Tampering(
        "hypernet.json: a config value changed (the checkpoint still loads)",
        lambda rd: edit_json(rd.checkpoint_dir(1) / "hypernet.json", lambda m: m["config"].update(client_init_std=0.2)),
        ("checkpoint", "mismatch", f"{CKPT_1}/hypernet.json"),
    ),
    Tampering(
        "hypernet.json: a flipped byte",
        lambda rd: flip_byte(rd.checkpoint_dir(1) / "hypernet.json", 0),
        ("checkpoint", "mismatch", f"{CKPT_1}/hypernet.json"),
    ),
    Tampering(
        "hypernet.json: the architecture no longer fits the weights (does not load)",
        lambda rd: edit_json(rd.checkpoint_dir(1) / "hypernet.json", lambda m: m["config"].update(hidden_dim=64)),
        ("checkpoint", "mismatch", f"{CKPT_1}/hypernet.json"),
    ),
    Tampering(
        "weights: a flipped byte (no longer matches weights_sha256)",
        lambda rd: flip_byte(rd.checkpoint_dir(1) / "hypernet.safetensors", -1),
        ("checkpoint", "mismatch", f"{CKPT_1}/hypernet.safetensors"),
    ),
    Tampering(
        "weights: a changed weight with weights_sha256 updated to match",
        _weights_and_metadata,
        ("checkpoint", "mismatch", f"{CKPT_1}/hypernet.safetensors"),
    ),
    Tampering(
        "optimizer: a flipped byte of tensor data",
        _optimizer_data_byte,
        ("checkpoint", "mismatch", f"{CKPT_1}/{OPTIMIZER_FILE}"),
    ),
    Tampering(
        "optimizer: a flipped byte of its header",
        lambda rd: flip_byte(rd.checkpoint_dir(1) / OPTIMIZER_FILE, 10),
        ("checkpoint", "mismatch", f"{CKPT_1}/{OPTIMIZER_FILE}"),
    ),
    Tampering(
        "optimizer: the file deleted",
        lambda rd: (rd.checkpoint_dir(1) / OPTIMIZER_FILE).unlink(),
        ("checkpoint", "missing", f"{CKPT_1}/{OPTIMIZER_FILE}"),
    ),
    Tampering(
        "forgets/<id>/adapters: an extra file",
        lambda rd: shutil.copy(rd.adapter_path(1, "alice"), rd.regenerated("bob").adapter_path(0, "bob")),
        ("regenerated", "mismatch", "forgets/bob/adapters/round-0000/bob.safetensors"),
        forgotten=True,
    ),
    Tampering(
        "stray: a leftover checkpoint swap folder .round-0002.old/",
        lambda rd: shutil.copytree(rd.checkpoint_dir(2), rd.root / "checkpoints" / ".round-0002.old"),
        ("stray", "mismatch", "checkpoints/.round-0002.old"),
    ),
    Tampering(
        "stray: an interrupted write's *.tmp",
        lambda rd: shutil.copy(rd.adapter_path(1, "bob"), rd.root / "adapters/round-0001/.bob.safetensors.x1.tmp"),
        ("stray", "mismatch", "adapters/round-0001/.bob.safetensors.x1.tmp"),
    ),
    Tampering(
        "stray: an unknown folder at the top",
        lambda rd: shutil.copytree(rd.root / "adapters", rd.root / "backup"),
        ("stray", "mismatch", "backup"),
    ),
    Tampering(
        "stray: a file inside a checkpoint",
        lambda rd: (rd.checkpoint_dir(1) / "notes.txt").write_text("x"),
        ("stray", "mismatch", f"{CKPT_1}/notes.txt"),
    ),
    Tampering(
        "pending forget: a valid journal",
        plant_journal('{"client_id": "alice", "mode": "delete", "round": 2, "done": []}'),
        ("forget", "missing", "forget_journal.json"),
    ),
    Tampering(
        "pending forget: a corrupt journal",
        plant_journal('{"client_id": "ali'),
        ("forget", "missing", "forget_journal.json"),
    ),
    Tampering(
        "pending forget: a journal that is a JSON list",
        plant_journal("[1, 2]"),
        ("forget", "missing", "forget_journal.json"),
    ),
    Tampering(
        "pending forget: a journal missing keys",
        plant_journal('{"client_id": "nobody"}'),
        ("forget", "missing", "forget_journal.json"),
    ),
    Tampering(
        "re-forged chain (adapter swapped, record edited, hashes and head recomputed), no trusted cert",
        reforge,
        ("ledger", "mismatch", "ledger.db: block 6"),
    ),
    Tampering(
        "re-forged chain, re-signed with another key, trusted cert",
        lambda rd: reforge(rd, resign_as=mallory()),
        ("ledger", "mismatch", "ledger.db: block 6"),
        trusted=True,
    ),
    Tampering(
        "re-forged chain, re-signed with another key: the certificate it records",
        lambda rd: reforge(rd, resign_as=mallory()),
        ("ledger", "mismatch", "ledger.db: ledger_meta 'writer_cert'"),
        trusted=True,
    ),
    Tampering(
        "a query function's empty block appended at the tip (unsigned)",
        append_query_block,
        ("ledger", "mismatch", "ledger.db: block 16"),
    ),
]


def test_the_untampered_runs_pass(clean_root, forgotten_root, trusted_cert, tmp_path):
    for root in (clean_root, forgotten_root):
        report = audit_run(root, trusted_cert=trusted_cert)
        assert report.ok, render(report)
        assert any("verified against the trusted certificate" in n for n in report.notes)


@pytest.mark.parametrize("tampering", TAMPERINGS, ids=[t.name for t in TAMPERINGS])
def test_each_tampering_is_caught_and_named(tampering, clean_root, forgotten_root, trusted_cert, tmp_path):
    rd = copy_of(forgotten_root if tampering.forgotten else clean_root, tmp_path)
    tampering.act(rd)
    report = audit_run(rd, trusted_cert=trusted_cert if tampering.trusted else None)
    assert not report.ok
    assert tampering.caught in failed(report), render(report)


def test_the_reforged_chain_names_the_swapped_adapters_block(clean_root, trusted_cert, tmp_path):
    rd = copy_of(clean_root, tmp_path)
    reforge(rd)
    with EmbeddedLedger(rd.ledger_path, read_only=True) as ledger:
        (block,) = [
            b for b in ledger.blocks() if b.function == "record_generation" and b.decoded_args()[:2] == ["1", "alice"]
        ]
    report = audit_run(rd, trusted_cert=trusted_cert)
    kinds = {f.message.split(":")[0] for f in report.failures() if f.check == "ledger"}
    assert kinds == {"signature-invalid"}
    assert f"ledger.db: block {block.number}" == report.culprits()[0]
    assert not [f for f in report.failures() if f.check == "adapter"]  # the records vouch for the swap...


def test_a_reforged_and_resigned_chain_passes_internally_and_the_notes_say_so(clean_root, tmp_path):
    rd = copy_of(clean_root, tmp_path)
    reforge(rd, resign_as=mallory())
    report = audit_run(rd)
    assert report.ok  # ...which is why the auditor must pin the writer's certificate
    assert any("internal consistency only" in n and "--trust-cert" in n for n in report.notes)


def test_submitting_a_query_to_the_runs_ledger_is_refused_and_appends_nothing(clean_root, tmp_path):
    rd = copy_of(clean_root, tmp_path)
    with EmbeddedLedger(rd.ledger_path) as ledger:
        before = ledger.head()
        with pytest.raises(ContractViolationError, match="evaluate-only"):
            ledger.submit("list_clients")
        assert ledger.head() == before
    assert audit_run(rd).ok


def test_metrics_integrity_is_stated_as_not_verifiable(clean_root):
    notes = audit_run(clean_root).notes
    assert any("metrics.json" in n and "cannot be verified" in n for n in notes)


# ---------------------------------------------------------------------- never writes


def _fingerprint(root) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_the_audit_changes_no_byte_of_any_file_even_with_a_live_wal_and_a_pending_forget(clean_root, tmp_path):
    rd = copy_of(clean_root, tmp_path)
    plant_journal('{"client_id": "alice", "mode": "delete", "round": 2, "done": []}')(rd)
    writer = sqlite3.connect(rd.ledger_path, isolation_level=None)  # a live WAL: -wal and -shm exist
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE IF NOT EXISTS scratch (x)")
    writer.execute("INSERT INTO scratch VALUES (1)")
    try:
        sides = {rd.root / "ledger.db-wal", rd.root / "ledger.db-shm"}
        assert all(p.exists() for p in sides)
        before = _fingerprint(rd.root)
        report = audit_run(rd)
        after = _fingerprint(rd.root)
    finally:
        writer.close()
    assert ("forget", "missing", "forget_journal.json") in failed(report)
    assert "hyperfed forget RUN --resume" in render(report)
    assert after == before  # same files, same bytes: -wal and -shm included
    assert {"ledger.db-wal", "ledger.db-shm", "forget_journal.json"} <= set(after)


def test_counts_of_the_tamper_table():
    """Issue 10 asks for the counts: every row above is one tampering, each must be caught."""
    assert len(TAMPERINGS) == 24


def test_the_cli_audits_against_a_trusted_certificate(clean_root, trusted_cert, tmp_path, capsys):
    from hyperfed.cli import main

    assert main(["audit", str(clean_root), "--trust-cert", str(trusted_cert)]) == 0
    assert "verified against the trusted certificate" in capsys.readouterr().out
    other = tmp_path / "other.pem"
    other.write_bytes(mallory().certificate_pem)
    assert main(["audit", str(clean_root), "--trust-cert", str(other)]) == 1
    assert "signature-invalid" in capsys.readouterr().out
    assert main(["audit", str(clean_root), "--trust-cert", str(tmp_path / "absent.pem")]) == 2
    assert "cannot read the certificate" in capsys.readouterr().err
