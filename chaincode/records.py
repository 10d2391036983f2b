"""State layout, argument validation and value encoding of the HyperFed contract.

Keys are simple (never composite) and prefixed; rounds are zero-padded so that lexical
range scans return them in numeric order::

    config                                  who may write (set once by init_ledger)
    head                                    the latest checkpoint's (round, version)
    client/<client_id>                      registration, commitment, status
    ckpt/<round:010d>/<version:06d>         one checkpoint (version > 0: after a forget)
    leaf/<round:010d>/<version:06d>/<id>    one client's embedding commitment in that
                                            checkpoint (a leaf of its Merkle root)
    weights/<weights_hash>                  first checkpoint with these shared weights
    gen/<round:010d>/<client_id>            one generated adapter per client per round
    cgen/<client_id>/<round:010d>           the same record, indexed by client
    forget/<client_id>                      the forget event

Values are canonical JSON (sorted keys, no spaces) with a ``"type"`` tag, so every
endorser writes identical bytes and a value that is not ours (for example a peer error
handed to the contract as data, a known defect of fabric-chaincode-python 2.5.4) is
refused instead of being misread.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "ContractError",
    "CONFIG_KEY",
    "HEAD_KEY",
    "MAX_ROUND",
    "MAX_VERSION",
    "client_key",
    "checkpoint_key",
    "checkpoint_prefix",
    "weights_key",
    "generation_key",
    "generation_prefix",
    "client_generation_prefix",
    "client_generation_key",
    "forget_key",
    "leaf_prefix",
    "leaf_key",
    "prefix_end",
    "files_key",
    "check_file_digests",
    "check_client_id",
    "check_digest",
    "check_round",
    "check_mode",
    "check_msp",
    "check_client_list",
    "check_commitments",
    "check_guarantee",
    "GUARANTEES",
    "encode",
    "decode",
    "timestamp_iso",
]

MAX_ROUND = 10**10 - 1
MAX_VERSION = 10**6 - 1
_DIGEST = re.compile(r"[0-9a-f]{64}")
_MODE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_MSP = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

CONFIG_KEY = "config"
HEAD_KEY = "head"


class ContractError(Exception):
    """A refused transaction. ``str()`` is ``"[code] message"``; callers parse the code.

    Codes: ``bad-argument``, ``not-configured``, ``already-configured``, ``not-writer``,
    ``unknown-client``, ``forgotten-client``, ``duplicate-client``, ``round-order``,
    ``merkle-mismatch``, ``unknown-checkpoint``, ``duplicate-generation``,
    ``not-in-checkpoint``, ``no-timestamp``, ``corrupt-state``, ``files-recorded`` (and, from the
    embedded ledger and the devnet, ``evaluate-only``: a query submitted as a transaction).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code


# ---------------------------------------------------------------------------- keys


def client_key(client_id: str) -> str:
    return f"client/{client_id}"


def checkpoint_prefix(round_no: int) -> str:
    return f"ckpt/{round_no:010d}/"


def checkpoint_key(round_no: int, version: int) -> str:
    return f"{checkpoint_prefix(round_no)}{version:06d}"


def files_key(round_no: int, weights_hash: str) -> str:
    """The digests of a checkpoint's files besides its shared weights (config, optimizer)."""
    return f"files/{round_no:010d}/{weights_hash}"


def check_file_digests(name: str, value: str) -> dict[str, str]:
    """A JSON object ``{part name: sha256 hex}`` with 1..10,000 parts named by printable text."""
    try:
        parts = json.loads(value)
    except ValueError as exc:
        raise ContractError("bad-argument", f"{name} is not JSON: {exc}") from exc
    if not isinstance(parts, dict) or not 0 < len(parts) <= 10_000:
        raise ContractError("bad-argument", f"{name} must be a non-empty JSON object {{part: sha256}}")
    for part, digest in parts.items():
        if not part or len(part) > 300 or not part.isprintable():
            raise ContractError("bad-argument", f"{name}: part name {part!r} must be 1-300 printable characters")
        check_digest(f"{name}[{part!r}]", digest)
    return {k: parts[k] for k in sorted(parts)}


def weights_key(weights_hash: str) -> str:
    return f"weights/{weights_hash}"


def generation_prefix(round_no: int) -> str:
    return f"gen/{round_no:010d}/"


def generation_key(round_no: int, client_id: str) -> str:
    return generation_prefix(round_no) + client_id


def client_generation_prefix(client_id: str) -> str:
    return f"cgen/{client_id}/"


def client_generation_key(client_id: str, round_no: int) -> str:
    return f"{client_generation_prefix(client_id)}{round_no:010d}"


def forget_key(client_id: str) -> str:
    return f"forget/{client_id}"


def leaf_prefix(round_no: int, version: int) -> str:
    return f"leaf/{round_no:010d}/{version:06d}/"


def leaf_key(round_no: int, version: int, client_id: str) -> str:
    return leaf_prefix(round_no, version) + client_id


def prefix_end(prefix: str) -> str:
    """Exclusive end key of a range scan over every key starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


# ---------------------------------------------------------------------- validation


def check_client_id(client_id: str) -> str:
    """A client id is 1-256 printable characters without surrounding spaces."""
    if not isinstance(client_id, str) or not 0 < len(client_id) <= 256:
        raise ContractError("bad-argument", f"client id must be 1-256 characters, got {client_id!r}")
    if client_id != client_id.strip() or not client_id.isprintable():
        raise ContractError(
            "bad-argument",
            f"client id {client_id!r} has control characters or surrounding spaces",
        )
    return client_id


def check_digest(name: str, value: str) -> str:
    """Hashes, commitments and roots are 64 lowercase hex characters (sha256)."""
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise ContractError("bad-argument", f"{name} must be 64 lowercase hex characters (sha256), got {value!r}")
    return value


def check_round(round_no: int) -> int:
    """Rounds are integers in ``[0, MAX_ROUND]`` (keys pad them to 10 digits)."""
    is_int = isinstance(round_no, int) and not isinstance(round_no, bool)
    if not is_int or not 0 <= round_no <= MAX_ROUND:
        raise ContractError("bad-argument", f"round must be an integer in [0, {MAX_ROUND}], got {round_no!r}")
    return round_no


def check_mode(mode: str) -> str:
    """A forget mode is a short lowercase token (``delete``, ``exact``…)."""
    if not isinstance(mode, str) or not _MODE.fullmatch(mode):
        raise ContractError("bad-argument", f"forget mode must match [a-z][a-z0-9_-]{{0,31}}, got {mode!r}")
    return mode


def check_msp(msp: str) -> str:
    """An MSP id: letters, digits, ``.``, ``_``, ``-``."""
    if not isinstance(msp, str) or not _MSP.fullmatch(msp):
        raise ContractError("bad-argument", f"invalid MSP id {msp!r}")
    return msp


def check_client_list(name: str, client_ids: Any) -> list[str]:
    """A list of distinct valid client ids, returned sorted."""
    if not isinstance(client_ids, list):
        raise ContractError("bad-argument", f"{name} must be a JSON list of client ids")
    ids = [check_client_id(c) for c in client_ids]
    if len(set(ids)) != len(ids):
        raise ContractError("bad-argument", f"{name} lists a client more than once")
    return sorted(ids)


def check_commitments(name: str, text: str) -> dict[str, str]:
    """A JSON object ``{client id: commitment}``, returned with its keys sorted.

    Each key is a valid client id and each value a sha256 hex digest.
    """
    try:
        value = json.loads(text) if isinstance(text, (str, bytes)) else text
    except ValueError:
        raise ContractError("bad-argument", f"{name} must be a JSON object {{client id: commitment}}") from None
    if not isinstance(value, dict):
        raise ContractError(
            "bad-argument", f"{name} must be a JSON object {{client id: commitment}}, got {type(value).__name__}"
        )
    return {check_client_id(c): check_digest(f"{name}[{c!r}]", value[c]) for c in sorted(value)}


#: What a forget can guarantee: the shared weights hold nothing of the client ("exact"),
#: hold it only under client-level differential privacy, or nothing is claimed.
GUARANTEES = ("exact", "(ε, δ)-DP", "none")
_GUARANTEE_NUMBERS = ("epsilon", "delta", "epsilon_known_participation")
_GUARANTEE_KEYS = frozenset(("policy", "guarantee", "text", *_GUARANTEE_NUMBERS))


def check_guarantee(text: str) -> dict[str, Any]:
    """A forget's stated guarantee: a JSON object with ``policy`` (a mode-like token),
    ``guarantee`` (one of :data:`GUARANTEES`), ``text`` (≤ 2,000 printable characters) and the
    numbers ``epsilon``, ``delta`` and optionally ``epsilon_known_participation`` (each finite
    and ≥ 0, or null: no privacy claimed); no other keys."""
    try:
        value = json.loads(text) if isinstance(text, (str, bytes)) else text
    except ValueError:
        raise ContractError("bad-argument", "guarantee must be a JSON object") from None
    if not isinstance(value, dict):
        raise ContractError("bad-argument", f"guarantee must be a JSON object, got {type(value).__name__}")
    extra = sorted(set(value) - _GUARANTEE_KEYS)
    if extra:
        raise ContractError("bad-argument", f"guarantee has unknown keys {extra[:3]}")
    if not isinstance(value.get("policy"), str) or not _MODE.fullmatch(value["policy"]):
        raise ContractError("bad-argument", f"guarantee.policy must be a short token, got {value.get('policy')!r}")
    if value.get("guarantee") not in GUARANTEES:
        raise ContractError("bad-argument", f"guarantee.guarantee must be one of {list(GUARANTEES)}")
    note = value.get("text")
    if not isinstance(note, str) or len(note) > 2000 or not note.isprintable():
        raise ContractError("bad-argument", "guarantee.text must be at most 2,000 printable characters")
    for name in _GUARANTEE_NUMBERS:
        if name not in value:
            if name == "epsilon_known_participation":  # only a dp delete states it
                continue
            raise ContractError("bad-argument", f"guarantee.{name} is missing (a number or null)")
        number = value[name]
        if number is not None and (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or not (0 <= number < float("inf"))  # NaN fails too
        ):
            raise ContractError("bad-argument", f"guarantee.{name} must be a finite number >= 0 or null")
    return {k: value[k] for k in sorted(value)}


# ------------------------------------------------------------------------ encoding


def encode(record_type: str, record: dict[str, Any]) -> bytes:
    """Canonical JSON bytes of a record tagged with its type."""
    body = dict(record, type=record_type)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode(record_type: str, key: str, raw: bytes) -> dict[str, Any] | None:
    """Decode a stored value (without its type tag); ``None`` for an absent key.

    The shim returns ``b""`` for an absent key.
    """
    if not raw:
        return None
    try:
        record = json.loads(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ContractError("corrupt-state", f"value of {key!r} is not a HyperFed record") from exc
    if not isinstance(record, dict) or record.pop("type", None) != record_type:
        raise ContractError("corrupt-state", f"value of {key!r} is not a {record_type} record")
    return record


def timestamp_iso(timestamp: Any) -> str:
    """RFC 3339 UTC text of the transaction's protobuf ``Timestamp`` (deterministic)."""
    if timestamp is None or not hasattr(timestamp, "seconds"):
        raise ContractError("no-timestamp", "the transaction carries no timestamp")
    seconds, nanos = int(timestamp.seconds), int(getattr(timestamp, "nanos", 0))
    base = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"
