"""Hash-chained blocks of the embedded ledger and the replay that verifies them.

One committed transaction is one block::

    hash = sha256(canonical JSON [number, prev_hash, tx_id, function, args_json,
                                  creator_msp, timestamp, writes_json])

with ``prev_hash`` the previous block's hash (block 0 points at :data:`GENESIS_PREV_HASH`).
``writes_json`` is the sorted write set ``[[key, base64 value | null], …]``.

:func:`verify_chain` recomputes every hash and link, then replays the write sets and
compares the result with the stored state and history index, so any edited, deleted,
inserted or reordered row is reported with its location. It is pure (no SQLite) so it
can be tested on hand-made rows.

A hash chain alone cannot tell a block appended by an attacker at the tip (with matching
state) from a real one; pass ``expected_head`` — a ``(number, hash)`` recorded elsewhere,
for example in a run directory — to pin the chain to a known point.

**Signatures.** An unkeyed hash chain can be recomputed by anyone who edits the file, so
every block also carries ``signature``: the writer's ECDSA P-256 (low-S) signature over
the block's hash (:func:`signing_message`). Pass ``signer`` — the public key of the writer's
certificate, ideally one the auditor trusts rather than the one the file records — and
every block must carry a valid signature by it. Blocks of format-1 ledgers (before
signing) have ``signature == ""``: ``signature-missing`` from ``require_signatures_from`` on.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from hyperfed.errors import TamperDetectedError

__all__ = [
    "GENESIS_PREV_HASH",
    "Block",
    "Problem",
    "VerifyReport",
    "encode_writes",
    "decode_writes",
    "block_hash",
    "signing_message",
    "verify_chain",
]

GENESIS_PREV_HASH = "0" * 64


@dataclass(frozen=True)
class Block:
    """One stored block, exactly as its row holds it (``args``/``writes`` as JSON text)."""

    number: int
    prev_hash: str
    tx_id: str
    function: str
    args: str
    creator_msp: str
    timestamp: float
    writes: str
    hash: str
    signature: str = ""  # base64 DER; "" in ledgers written before blocks were signed

    def computed_hash(self) -> str:
        """The hash this block's contents should have."""
        return block_hash(
            self.number,
            self.prev_hash,
            self.tx_id,
            self.function,
            self.args,
            self.creator_msp,
            self.timestamp,
            self.writes,
        )

    def decoded_args(self) -> list[str]:
        return list(json.loads(self.args))

    def decoded_writes(self) -> dict[str, bytes | None]:
        return decode_writes(self.writes)


@dataclass(frozen=True)
class Problem:
    """One inconsistency: what (``kind``), where (``location``) and a readable detail."""

    kind: str
    location: str
    detail: str

    def __str__(self) -> str:
        return f"{self.location}: {self.kind} ({self.detail})"


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`verify_chain`. ``ok`` iff ``problems`` is empty."""

    blocks: int
    head: tuple[int, str] | None
    problems: tuple[Problem, ...]
    unsigned: int = 0  # blocks that carry no signature
    signer: str = ""  # whose signatures were checked, e.g. "trusted certificate sha256:…"

    @property
    def ok(self) -> bool:
        return not self.problems

    def culprits(self) -> list[str]:
        """Locations of every problem, e.g. ``["block 3", "state 'client/a'"]``."""
        return list(dict.fromkeys(p.location for p in self.problems))

    def __str__(self) -> str:
        if self.ok:
            tip = f"block {self.head[0]} {self.head[1][:12]}…" if self.head else "empty"
            signed = f", signed by the {self.signer}" if self.signer else ""
            return f"ledger verified: {self.blocks} blocks, head {tip}{signed}"
        lines = [f"ledger FAILED verification: {len(self.problems)} problem(s)"]
        return "\n".join(lines + [f"  - {p}" for p in self.problems])

    def raise_if_failed(self) -> None:
        """Raise :class:`~hyperfed.errors.TamperDetectedError` listing the problems."""
        if not self.ok:
            raise TamperDetectedError(str(self))


def encode_writes(writes: Mapping[str, bytes | None]) -> str:
    """Canonical JSON text of a write set (sorted keys, base64 values, null = delete)."""
    items = [[k, None if v is None else base64.b64encode(v).decode("ascii")] for k, v in sorted(writes.items())]
    return json.dumps(items, separators=(",", ":"), ensure_ascii=False)


def decode_writes(text: str) -> dict[str, bytes | None]:
    """Inverse of :func:`encode_writes`; raises ``ValueError`` on malformed text."""
    items = json.loads(text)
    if not isinstance(items, list):
        raise ValueError("write set is not a list")
    return {str(k): None if v is None else base64.b64decode(v, validate=True) for k, v in items}


def block_hash(
    number: int, prev_hash: str, tx_id: str, function: str, args: str, creator_msp: str, timestamp: float, writes: str
) -> str:
    """sha256 (hex) of a block's canonical contents."""
    body = [number, prev_hash, tx_id, function, args, creator_msp, timestamp, writes]
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(data).hexdigest()


_P256_HALF_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551 >> 1


def _verify_low_s(public_key: ec.EllipticCurvePublicKey, message: bytes, der: bytes) -> bool:
    """ECDSA/SHA-256 over ``message`` with ``s`` in the lower half (what
    :func:`hyperfed.ledger.gateway.identity.sign_low_s` makes). The same check as the
    Gateway's ``verify_signature``, kept here so that verifying a chain — an audit — never
    imports the Gateway package and its gRPC stack."""
    try:
        if decode_dss_signature(der)[1] > _P256_HALF_ORDER:
            return False
        public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def signing_message(digest: str) -> bytes:
    """What the writer signs for a block: its hash (hex), as ASCII bytes."""
    return digest.encode("ascii")


def _check_signatures(
    blocks: list[Block], signer: ec.EllipticCurvePublicKey | None, required_from: int | None, problems: list[Problem]
) -> int:
    """Add a problem per block whose signature is missing or wrong; return the unsigned count."""
    unsigned = 0
    for block in blocks:
        where = f"block {block.number}"
        if not block.signature:
            unsigned += 1
            if required_from is not None and block.number >= required_from:
                problems.append(Problem("signature-missing", where, "the block is not signed by the writer"))
            continue
        if signer is None:
            problems.append(Problem("signature-unverifiable", where, "signed, but no writer certificate to check it"))
            continue
        try:
            der = base64.b64decode(block.signature, validate=True)
        except ValueError:
            der = b""
        if not _verify_low_s(signer, signing_message(block.hash), der):
            problems.append(
                Problem("signature-invalid", where, "not signed by the writer's key (re-forged or re-signed?)")
            )
    return unsigned


def _replay(blocks: list[Block], problems: list[Problem]) -> tuple[dict, set]:
    """Check hashes and links; return (expected state, expected history index)."""
    state: dict[str, tuple[bytes, int]] = {}
    history: set[tuple[str, int]] = set()
    seen_tx: dict[str, int] = {}
    prev: Block | None = None
    for block in blocks:
        where = f"block {block.number}"
        expected_number = 0 if prev is None else prev.number + 1
        if block.number != expected_number:
            missing = (
                f"block {expected_number}"
                if block.number == expected_number + 1
                else f"blocks {expected_number}-{block.number - 1}"
            )
            problems.append(Problem("missing-block", missing, f"absent before {where}"))
        if block.computed_hash() != block.hash:
            problems.append(Problem("block-altered", where, "contents do not match its hash"))
        if block.number == 0:
            link = GENESIS_PREV_HASH
        else:
            link = prev.hash if prev is not None and prev.number == block.number - 1 else None
        if link is not None and block.prev_hash != link:
            problems.append(Problem("chain-broken", where, "prev_hash is not the previous block's hash"))
        if block.tx_id in seen_tx:
            problems.append(
                Problem("duplicate-transaction", where, f"tx {block.tx_id} already in block {seen_tx[block.tx_id]}")
            )
        seen_tx.setdefault(block.tx_id, block.number)
        prev = block
        try:
            writes = block.decoded_writes()
        except (ValueError, TypeError) as exc:
            problems.append(Problem("block-unreadable", where, f"write set: {exc}"))
            continue
        for key, value in writes.items():
            history.add((key, block.number))
            if value is None:
                state.pop(key, None)
            else:
                state[key] = (value, block.number)
    return state, history


def verify_chain(
    blocks: Iterable[Block],
    state: Mapping[str, tuple[bytes, int]],
    history: Iterable[tuple[str, int]],
    *,
    expected_head: tuple[int, str] | None = None,
    signer: ec.EllipticCurvePublicKey | None = None,
    require_signatures_from: int | None = None,
    signer_name: str = "",
) -> VerifyReport:
    """Verify blocks (ordered by number), the state table and the history index.

    Parameters
    ----------
    blocks
        Every stored block, ordered by ``number``.
    state
        The stored state: key -> (value, version).
    history
        The stored history index: ``(key, block number)`` pairs.
    expected_head
        Optional anchor ``(number, hash)``: that block must exist with that hash.
    signer
        The writer's public key: every signed block must verify against it.
    require_signatures_from
        Unsigned blocks from this number on are problems (``signature-missing``); ``0``
        when the auditor trusts a certificate, the first signed block of a ledger that was
        written unsigned (format 1) before, ``None``: no signature required.
    signer_name
        Who ``signer`` is, for the report (``"trusted certificate sha256:…"``).
    """
    blocks = list(blocks)
    problems: list[Problem] = []
    replayed, replayed_history = _replay(blocks, problems)
    for key in sorted(set(replayed) | set(state)):
        where = f"state {key!r}"
        if key not in state:
            problems.append(Problem("state-deleted", where, f"block {replayed[key][1]} wrote it but it is gone"))
        elif key not in replayed:
            problems.append(Problem("state-inserted", where, "no block wrote this value"))
        elif tuple(state[key]) != replayed[key]:
            problems.append(Problem("state-altered", where, "value or version differs from the blocks' write sets"))
    stored_history = set(history)
    for key, number in sorted(replayed_history ^ stored_history):
        kind = "history-deleted" if (key, number) in replayed_history else "history-inserted"
        problems.append(Problem(kind, f"history {key!r}@{number}", "history index differs"))
    unsigned = _check_signatures(blocks, signer, require_signatures_from, problems)
    if expected_head is not None:
        number, digest = expected_head
        anchored = next((b for b in blocks if b.number == number), None)
        if anchored is None:
            problems.append(Problem("chain-truncated", f"block {number}", "the anchored block is missing"))
        elif anchored.hash != digest:
            problems.append(Problem("anchor-mismatch", f"block {number}", "hash differs from the anchored head"))
    head = (blocks[-1].number, blocks[-1].hash) if blocks else None
    return VerifyReport(len(blocks), head, tuple(problems), unsigned=unsigned, signer=signer_name)
