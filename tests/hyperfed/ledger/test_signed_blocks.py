"""Signed blocks of the embedded ledger: who may append, what a re-forged chain looks like,
where the writer's key lives, queries never appended, and format-1 (unsigned) files."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat

import pytest

from hyperfed.errors import ContractViolationError, LedgerError
from hyperfed.ledger import EmbeddedLedger
from hyperfed.ledger.devnet.pki import self_signed_identity
from hyperfed.ledger.embedded.chain import block_hash
from hyperfed.ledger.embedded.identity import dev_identity, dev_identity_dir, writer_identity
from hyperfed.ledger.gateway.identity import SigningIdentity

WRITER = "HyperFedMSP"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def identity(msp: str = WRITER) -> SigningIdentity:
    issued = self_signed_identity(msp, f"test@{msp}")
    return SigningIdentity(msp, issued.cert_pem, issued.private_key)


@pytest.fixture
def writer():
    return identity()


@pytest.fixture
def ledger_file(tmp_path, writer):
    path = tmp_path / "ledger.db"
    with EmbeddedLedger(path, identity=writer) as ledger:
        for name in ("alice", "bob", "carol"):
            ledger.submit("register_client", name, h(name))
    return path


def reforge(path, number: int, args: str) -> None:
    """The attack of issue 10 #8: edit one block, then recompute every later hash and link."""
    conn = sqlite3.connect(path, isolation_level=None)
    rows = [list(r) for r in conn.execute("SELECT * FROM blocks ORDER BY number")]
    conn.execute("BEGIN")
    prev = None
    for row in rows:
        if row[0] == number:
            row[4] = args
        if prev is not None:
            row[1] = prev
        row[8] = block_hash(*row[:8])
        prev = row[8]
        conn.execute(
            "UPDATE blocks SET prev_hash = ?, args = ?, hash = ? WHERE number = ?", (row[1], row[4], row[8], row[0])
        )
    conn.execute("COMMIT")
    conn.close()


def test_every_block_is_signed_and_verifies_against_the_trusted_certificate(ledger_file, writer):
    with EmbeddedLedger(ledger_file) as ledger:
        assert all(b.signature for b in ledger.blocks())
        assert ledger.writer_certificate() == writer.certificate_pem
        report = ledger.verify(trusted_cert=writer.certificate_pem)
    assert report.ok and report.unsigned == 0 and "trusted certificate sha256:" in str(report)


def test_a_reforged_chain_fails_with_the_trusted_certificate_and_names_the_blocks(ledger_file, writer):
    reforge(ledger_file, 2, json.dumps(["bob", h("forged")]))
    with EmbeddedLedger(ledger_file) as ledger:
        report = ledger.verify(trusted_cert=writer.certificate_pem)
        recorded = ledger.verify()  # the recorded certificate catches it too: old signatures
    assert {p.kind for p in report.problems} >= {"signature-invalid"}
    assert {"block 2", "block 3"} <= set(report.culprits())
    assert not recorded.ok


def test_resigning_with_another_key_passes_internally_but_not_against_the_trusted_cert(ledger_file, writer):
    import base64

    reforge(ledger_file, 2, json.dumps(["bob", h("forged")]))
    mallory = identity()
    conn = sqlite3.connect(ledger_file, isolation_level=None)
    for number, digest in conn.execute("SELECT number, hash FROM blocks").fetchall():
        signature = base64.b64encode(mallory.sign(digest.encode())).decode()
        conn.execute("UPDATE blocks SET signature = ? WHERE number = ?", (signature, number))
    conn.execute("UPDATE ledger_meta SET value = ? WHERE name = 'writer_cert'", (mallory.certificate_pem.decode(),))
    conn.close()
    with EmbeddedLedger(ledger_file) as ledger:
        internal = ledger.verify()
        trusted = ledger.verify(trusted_cert=writer.certificate_pem)
    assert internal.ok  # internally consistent: the file alone cannot tell
    kinds = {p.kind for p in trusted.problems}
    assert {"signature-invalid", "writer-certificate-mismatch"} <= kinds
    assert trusted.culprits()[0] == "ledger_meta 'writer_cert'"


def test_a_process_without_the_writers_key_cannot_append(ledger_file):
    with EmbeddedLedger(ledger_file, identity=identity()) as intruder:
        with pytest.raises(LedgerError, match="written by the key of certificate"):
            intruder.submit("register_client", "mallory", h("m"))
    with EmbeddedLedger(ledger_file) as ledger:
        assert len(ledger.blocks()) == 4


def test_submitting_a_query_is_refused_and_appends_nothing(ledger_file, writer):
    with EmbeddedLedger(ledger_file, identity=writer) as ledger:
        before = ledger.head()
        for query in ("get_config", "list_clients", "get_client"):
            with pytest.raises(ContractViolationError, match=rf"\[evaluate-only\] {query}"):
                ledger.submit(query, "alice") if query == "get_client" else ledger.submit(query)
        sim = ledger.simulate("list_clients", [], tx_id="t", creator_msp=WRITER)
        with pytest.raises(ContractViolationError, match="evaluate-only"):
            ledger.commit(sim)  # the peer path (simulate + commit) refuses it too
        assert ledger.head() == before


def test_the_dev_identity_is_created_once_per_user_with_a_private_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERFED_HOME", str(tmp_path / "home"))
    first, again = dev_identity("DevMSP"), dev_identity("DevMSP")
    assert first.certificate_pem == again.certificate_pem
    folder = dev_identity_dir("DevMSP")
    assert folder == tmp_path / "home" / "identities" / "DevMSP"
    assert stat.S_IMODE((folder / "key.pem").stat().st_mode) == 0o600
    assert writer_identity("DevMSP", folder).certificate_pem == first.certificate_pem
    with EmbeddedLedger(tmp_path / "run" / "ledger.db", writer_msp="DevMSP", msp_id="DevMSP") as ledger:
        assert ledger.writer_certificate() == first.certificate_pem
    assert not list((tmp_path / "run").glob("*.pem"))  # the key never lands in the run


def test_a_format_1_file_is_read_and_signed_from_its_next_commit(ledger_file, writer):
    conn = sqlite3.connect(ledger_file, isolation_level=None)  # make it look written before signing
    conn.execute("BEGIN")
    conn.execute(
        "CREATE TABLE old AS SELECT number, prev_hash, tx_id, function, args, creator_msp,"
        " timestamp, writes, hash FROM blocks"
    )
    conn.execute("DROP TABLE blocks")
    conn.execute("ALTER TABLE old RENAME TO blocks")
    conn.execute("DELETE FROM ledger_meta WHERE name IN ('writer_cert', 'signed_from')")
    conn.execute("UPDATE ledger_meta SET value = 'hyperfed-embedded-ledger/1' WHERE name = 'format'")
    conn.execute("COMMIT")
    conn.close()
    with EmbeddedLedger(ledger_file, read_only=True) as ledger:
        legacy = ledger.verify()
        assert legacy.ok and legacy.unsigned == 4
        assert not ledger.verify(trusted_cert=writer.certificate_pem).ok  # unsigned: nothing to prove
    with EmbeddedLedger(ledger_file, identity=writer) as ledger:
        ledger.submit("register_client", "dave", h("dave"))
        report = ledger.verify()
        assert report.ok and report.unsigned == 4 and ledger.blocks()[-1].signature
