"""The embedded ledger (the default): the HyperFed contract on a hash-chained SQLite file.

``EmbeddedLedger`` plays a Fabric peer for one organisation: it simulates transactions
with the real contract against committed state (:mod:`hyperfed.ledger.embedded.stub`), then
validates the read set (MVCC) and commits the write set as a new block, atomically.

Durability and crash safety come from SQLite: WAL journal, ``synchronous=FULL`` and one
SQLite transaction per commit (block row + state + history index), so a process killed
mid-write leaves the previous state — never half a block. Two ``EmbeddedLedger`` objects
on one file (or threads sharing one) are safe: a transaction whose reads went stale is
refused with :class:`~hyperfed.errors.LedgerConflictError`, never applied over a newer
write.

On a new file the constructor submits ``init_ledger(writer_msp)`` as block 0, from
``writer_msp``. Afterwards only that MSP may write; ``msp_id`` is the identity this object
submits and evaluates as.

**Signed blocks.** Every committed block is signed with the writer's key
(:mod:`~hyperfed.ledger.embedded.identity`: a configured identity folder, else the per-user
dev identity — never a file of the run directory). The first signed block records the
writer's certificate in ``ledger_meta``; later commits with another key are refused, so a
process without the writer's key cannot append. :meth:`verify` checks every signature
against a certificate the auditor trusts (``trusted_cert=``) or, failing that, the one the
file records (which only proves internal consistency). Files of format 1 (unsigned) stay
readable; their first commit adds the signature column and signs from then on.

Query functions (the contract's ``get_evaluate_transactions()``) are never committed:
submitting one raises :class:`~hyperfed.errors.ContractViolationError` and appends nothing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from chaincode.contract import HyperFedContract
from chaincode.fabric_compat import ContractChaincode
from hyperfed.errors import (
    ContractViolationError,
    LedgerConflictError,
    LedgerError,
    LedgerUnavailableError,
)
from hyperfed.ledger.base import LedgerBackend
from hyperfed.ledger.embedded.chain import (
    GENESIS_PREV_HASH,
    Block,
    Problem,
    VerifyReport,
    block_hash,
    encode_writes,
    signing_message,
    verify_chain,
)
from hyperfed.ledger.embedded.identity import (
    certificate_fingerprint,
    load_certificate,
    writer_identity,
)
from hyperfed.ledger.embedded.sqlite_state import BLOCK_COLUMNS, SCHEMA, TIP, SqliteState
from hyperfed.ledger.embedded.stub import Simulation, StateReader, simulate_transaction

if TYPE_CHECKING:  # signing pulls the Gateway package (gRPC): imported on the first commit only
    from hyperfed.ledger.gateway.identity import SigningIdentity

__all__ = ["EmbeddedLedger", "Simulation", "new_tx_id"]

log = logging.getLogger(__name__)

FORMAT = "hyperfed-embedded-ledger/2"  # /2: signed blocks
LEGACY_FORMATS = ("hyperfed-embedded-ledger/1",)  # unsigned blocks: read, upgraded on first commit
_QUERIES = frozenset(HyperFedContract().get_evaluate_transactions())


def new_tx_id(creator_msp: str) -> str:
    """A Fabric-style transaction id: hex sha256(random nonce || creator)."""
    return hashlib.sha256(os.urandom(24) + creator_msp.encode("utf-8")).hexdigest()


class EmbeddedLedger(LedgerBackend):
    """A single-file ledger running :class:`chaincode.contract.HyperFedContract` in-process.

    Parameters
    ----------
    path
        SQLite file; created (with its parent folders) if missing.
    writer_msp
        The only MSP allowed to write; recorded by block 0 when the file is new.
        Ignored (with a warning if different) for an existing ledger.
    msp_id
        The identity this object's :meth:`submit` and :meth:`evaluate` act as.
    busy_timeout
        Seconds to wait for another writer's lock before raising
        :class:`~hyperfed.errors.LedgerUnavailableError`.
    identity
        Who signs the blocks this object commits: a
        :class:`~hyperfed.ledger.gateway.identity.SigningIdentity`, an identity folder
        (``cert.pem`` + ``key.pem`` or ``signcerts/`` + ``keystore/``), or ``None``: the
        per-user dev identity of the writer MSP (created on first commit). Loaded only when
        something is committed, so reading never needs the key.
    read_only
        Never commit (an audit's snapshot): a new file is not initialised either.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        writer_msp: str = "HyperFedMSP",
        msp_id: str = "HyperFedMSP",
        busy_timeout: float = 30.0,
        identity: SigningIdentity | str | os.PathLike[str] | None = None,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.local_file = self.path
        self.msp_id = msp_id
        self.read_only = read_only
        self._writer_msp = writer_msp
        self._identity_source = identity
        self._signer: SigningIdentity | None = None if isinstance(identity, (str, os.PathLike)) else identity
        self._writer_checked = False
        self._lock = threading.RLock()
        self._chaincode = ContractChaincode.new_chaincode(HyperFedContract())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            with self._sqlite_errors():
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._create_schema()
            self._state = SqliteState(self._conn)
            if not read_only:
                self._ensure_configured(writer_msp)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ plumbing

    @contextlib.contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise LedgerUnavailableError(f"{self.path} is busy: {exc}") from exc
            raise LedgerError(f"{self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{self.path} is not a readable HyperFed ledger: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self, mode: str = "") -> Iterator[sqlite3.Connection]:
        """One SQLite transaction under the object lock; rolled back unless committed."""
        with self._lock, self._sqlite_errors():
            conn = self._connection()
            conn.execute(f"BEGIN {mode}")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError(f"the ledger {self.path} is closed")
        return self._conn

    def _create_schema(self) -> None:
        with self._transaction("" if self.read_only else "IMMEDIATE") as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not self.read_only or "ledger_meta" not in tables:
                for statement in filter(str.strip, SCHEMA.split(";")):
                    conn.execute(statement)
            row = conn.execute("SELECT value FROM ledger_meta WHERE name = 'format'").fetchone()
            if row is None:
                conn.execute("INSERT INTO ledger_meta VALUES ('format', ?)", (FORMAT,))
            elif row[0] != FORMAT and row[0] not in LEGACY_FORMATS:
                raise LedgerError(f"{self.path} holds ledger format {row[0]!r}, not {FORMAT!r}")

    def _meta(self, conn: sqlite3.Connection, name: str) -> str | None:
        row = conn.execute("SELECT value FROM ledger_meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _signing_identity(self) -> SigningIdentity:
        if self._signer is None:
            source = None if self._identity_source is None else os.fspath(self._identity_source)  # type: ignore[arg-type]
            self._signer = writer_identity(self._writer_msp, source)
        return self._signer

    def _check_writer(self, conn: sqlite3.Connection, signer: SigningIdentity, number: int) -> None:
        """Record the writer's certificate with the first signed block; refuse any other key."""
        if self._writer_checked:
            return
        columns = {r[1] for r in conn.execute("PRAGMA table_info(blocks)")}
        if "signature" not in columns:  # format 1: sign from now on
            conn.execute("ALTER TABLE blocks ADD COLUMN signature TEXT NOT NULL DEFAULT ''")
            conn.execute("UPDATE ledger_meta SET value = ? WHERE name = 'format'", (FORMAT,))
            log.warning("%s was written unsigned (format 1): blocks from %d on are signed", self.path, number)
        recorded = self._meta(conn, "writer_cert")
        if recorded is None:
            conn.execute("INSERT INTO ledger_meta VALUES ('writer_cert', ?)", (signer.certificate_pem.decode("ascii"),))
            conn.execute("INSERT INTO ledger_meta VALUES ('signed_from', ?)", (str(number),))
        else:
            ours, theirs = load_certificate(signer.certificate_pem), load_certificate(recorded.encode("ascii"))
            der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            if ours.public_key().public_bytes(*der) != theirs.public_key().public_bytes(*der):
                raise LedgerError(
                    f"{self.path} is written by the key of certificate {certificate_fingerprint(theirs)}, "
                    f"not by this identity ({certificate_fingerprint(ours)}): configure the writer's "
                    "identity (LedgerSettings.identity / identity=) or set HYPERFED_HOME to where it lives"
                )
        self._writer_checked = True

    def _ensure_configured(self, writer_msp: str) -> None:
        if self.head() is None:
            try:
                sim = self.simulate("init_ledger", [writer_msp], tx_id=new_tx_id(writer_msp), creator_msp=writer_msp)
                self.commit(sim)
                log.info("created ledger %s with writer MSP %s", self.path, writer_msp)
                return
            except LedgerConflictError:
                pass  # another process initialised it at the same moment
        config = json.loads(self.evaluate("get_config"))
        if config["writer_msp"] != writer_msp:
            log.warning("ledger %s keeps its writer MSP %r (asked for %r)", self.path, config["writer_msp"], writer_msp)

    # ---------------------------------------------------------- peer operations

    def simulate(
        self, function: str, args: Sequence[str], *, tx_id: str, creator_msp: str, timestamp: float | None = None
    ) -> Simulation:
        """Execute the contract against committed state without writing anything.

        Raises
        ------
        ContractViolationError
            The contract refused.
        LedgerConflictError
            ``tx_id`` was already committed.
        """
        when = time.time() if timestamp is None else float(timestamp)
        with self._transaction():  # one read snapshot for the whole simulation
            return simulate_transaction(
                self._chaincode, self._state, function, list(args), tx_id=tx_id, creator_msp=creator_msp, timestamp=when
            )

    def commit(self, sim: Simulation) -> int:
        """Validate ``sim``'s reads against current state and append it as a block.

        Returns
        -------
        int
            The new block's number.

        Raises
        ------
        LedgerConflictError
            A key or range it read has changed since, or its tx id is already committed.
        """
        if sim.function in _QUERIES:
            raise ContractViolationError(
                f"[evaluate-only] {sim.function} is a query: evaluate it instead of submitting; nothing was written"
            )
        if self.read_only:
            raise LedgerError(f"{self.path} is opened read-only: nothing can be committed")
        signer = self._signing_identity()
        with self._transaction("IMMEDIATE") as conn:
            self._validate(sim)
            tip = conn.execute(TIP).fetchone()
            number, prev_hash = (0, GENESIS_PREV_HASH) if tip is None else (tip[0] + 1, tip[1])
            self._check_writer(conn, signer, number)
            args, writes = json.dumps(list(sim.args), ensure_ascii=False), encode_writes(sim.writes)
            digest = block_hash(
                number, prev_hash, sim.tx_id, sim.function, args, sim.creator_msp, sim.timestamp, writes
            )
            signature = base64.b64encode(signer.sign(signing_message(digest))).decode("ascii")
            row = (number, prev_hash, sim.tx_id, sim.function, args, sim.creator_msp, sim.timestamp, writes, digest)
            conn.execute(
                f"INSERT INTO blocks ({BLOCK_COLUMNS}, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*row, signature),
            )
            for key, value in sorted(sim.writes.items()):
                if value is None:
                    conn.execute("DELETE FROM state WHERE key = ?", (key,))
                else:
                    conn.execute(
                        "INSERT INTO state VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE"
                        " SET value = excluded.value, version = excluded.version",
                        (key, value, number),
                    )
                conn.execute("INSERT INTO history VALUES (?, ?)", (key, number))
        return number

    def _validate(self, sim: Simulation) -> None:
        if self._state.has_transaction(sim.tx_id):
            raise LedgerConflictError(f"duplicate transaction id {sim.tx_id}: already committed")
        for key, seen in sim.reads.items():
            now = self._state.version(key)
            if now != seen:
                raise LedgerConflictError(f"MVCC read conflict on {key!r}: read version {seen}, now {now}; retry")
        for scan in sim.range_reads:
            now = tuple((k, v) for k, _, v in self._state.read_range(scan.start, scan.end))
            if now != scan.keys:
                raise LedgerConflictError(f"phantom read in range [{scan.start!r}, {scan.end!r}); retry")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[StateReader]:
        """A consistent read-only view of committed state, for as long as the block runs."""
        with self._transaction():
            yield self._state

    # ------------------------------------------------------------ LedgerBackend

    def submit(self, function: str, *args: str) -> bytes:
        """Simulate as :attr:`msp_id` and commit; the payload once committed.

        Raises
        ------
        ContractViolationError
            The contract refused, or ``function`` is a query (evaluate-only).
        """
        if function in _QUERIES:
            raise ContractViolationError(
                f"[evaluate-only] {function} is a query: call evaluate({function!r}), not submit; nothing was written"
            )
        sim = self.simulate(function, args, tx_id=new_tx_id(self.msp_id), creator_msp=self.msp_id)
        self.commit(sim)
        return sim.payload

    def evaluate(self, function: str, *args: str) -> bytes:
        """Run a query as :attr:`msp_id` on committed state; nothing is written."""
        return self.simulate(function, args, tx_id=new_tx_id(self.msp_id), creator_msp=self.msp_id).payload

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ---------------------------------------------------------------- the chain

    def head(self) -> tuple[int, str] | None:
        """``(number, hash)`` of the last block, or ``None`` for an empty file."""
        with self._transaction() as conn:
            row = conn.execute(TIP).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def blocks(self, start: int = 0) -> list[Block]:
        """Stored blocks from ``start`` on, in order (not verified: see :meth:`verify`)."""
        with self._transaction() as conn:
            rows = conn.execute("SELECT * FROM blocks WHERE number >= ? ORDER BY number", (start,)).fetchall()
        return [Block(*row) for row in rows]

    def writer_certificate(self) -> bytes | None:
        """The writer's certificate (PEM) recorded with the first signed block, if any."""
        with self._transaction() as conn:
            recorded = self._meta(conn, "writer_cert")
        return None if recorded is None else recorded.encode("ascii")

    def verify(self, *, expected_head: tuple[int, str] | None = None, trusted_cert: Any = None) -> VerifyReport:
        """Check the file: page integrity, hash chain, signatures, and state == replay of the blocks.

        Parameters
        ----------
        expected_head
            Optional ``(number, hash)`` recorded elsewhere earlier; block ``number`` must
            still exist with that hash (catches truncation and rewritten tips).
        trusted_cert
            The writer's certificate as the auditor knows it (PEM path, PEM bytes or
            ``x509.Certificate``): every block must be signed by its key. ``None``: check
            against the certificate the file records — which whoever rewrote the file could
            have replaced, so that proves internal consistency only.
        """
        with self._transaction() as conn:
            check = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
            blocks = [Block(*row) for row in conn.execute("SELECT * FROM blocks ORDER BY number")]
            state = {k: (bytes(v), int(n)) for k, v, n in conn.execute("SELECT * FROM state")}
            history = [(k, int(n)) for k, n in conn.execute("SELECT key, block FROM history")]
            recorded, signed_from = self._meta(conn, "writer_cert"), self._meta(conn, "signed_from")
        problems: list[Problem] = []
        if trusted_cert is not None:
            cert = load_certificate(trusted_cert)
            signer, required_from, name = cert.public_key(), 0, f"trusted certificate {certificate_fingerprint(cert)}"
            if recorded is not None and load_certificate(recorded.encode("ascii")) != cert:
                problems.append(
                    Problem("writer-certificate-mismatch", "ledger_meta 'writer_cert'", "not the trusted certificate")
                )
        elif recorded is not None:
            cert = load_certificate(recorded.encode("ascii"))
            signer, name = cert.public_key(), f"recorded certificate {certificate_fingerprint(cert)}"
            required_from = int(signed_from) if signed_from and signed_from.isdigit() else 0
        else:
            signer, required_from, name = None, None, ""
        if not isinstance(signer, (ec.EllipticCurvePublicKey, type(None))):
            problems.append(Problem("signature-unverifiable", "writer certificate", "not an EC P-256 certificate"))
            signer = None
        report = verify_chain(
            blocks,
            state,
            history,
            expected_head=expected_head,
            signer=signer,
            require_signatures_from=required_from,
            signer_name=name,
        )
        if problems:
            report = VerifyReport(report.blocks, report.head, tuple(problems) + report.problems, report.unsigned, name)
        if check != ["ok"]:
            problem = Problem("file-corrupt", str(self.path), "; ".join(check)[:500])
            report = VerifyReport(report.blocks, report.head, (problem,) + report.problems, report.unsigned, name)
        log.info("%s", report)
        return report

    def __repr__(self) -> str:
        return f"EmbeddedLedger({str(self.path)!r}, msp_id={self.msp_id!r})"
