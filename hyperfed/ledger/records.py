"""Typed, immutable views of what the contract stores and returns.

Each class mirrors one JSON record of :mod:`chaincode.contract` field for field; unknown
fields are ignored so that a newer contract can add fields without breaking readers.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from hyperfed.ledger.commitment import verify_membership

__all__ = [
    "LedgerInitRecord",
    "DEFAULT_WRITER_MSP",
    "ClientRecord",
    "CheckpointRecord",
    "GenerationRecord",
    "ForgetRecord",
    "ClientChange",
    "ClientHistory",
    "RoundRecords",
    "MembershipProof",
    "Receipt",
    "from_json",
    "violation_code",
]

T = TypeVar("T")
_CODE = re.compile(r"\[([a-z][a-z-]*)\]")


def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build dataclass ``cls`` from a contract record (lists become tuples)."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            value = data[f.name]
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def violation_code(error: BaseException) -> str | None:
    """The contract's refusal code in an error message (``"unknown-client"``…), if any."""
    match = _CODE.search(str(error))
    return match.group(1) if match else None


#: The MSP that writes a run's records unless the run config names another.
DEFAULT_WRITER_MSP = "HyperFedMSP"


@dataclass(frozen=True)
class LedgerInitRecord:
    """What ``init_ledger`` recorded: the one MSP allowed to write, and when."""

    writer_msp: str
    tx_id: str
    timestamp: str


@dataclass(frozen=True)
class ClientRecord:
    """A registered client; ``status`` is ``"active"`` or ``"forgotten"``."""

    client_id: str
    commitment: str
    status: str
    registered_tx: str
    registered_at: str
    forgotten_round: int | None = None
    forgotten_tx: str | None = None
    forgotten_at: str | None = None

    @property
    def forgotten(self) -> bool:
        return self.status == "forgotten"


@dataclass(frozen=True)
class CheckpointRecord:
    """Shared-weights hash + commitments root at ``(round, version)``.

    ``kind`` is ``"train"`` (version 0) or ``"forget"`` (written by a forget, which names
    ``forgotten_client``).
    """

    round: int
    version: int
    weights_hash: str
    merkle_root: str
    client_ids: tuple[str, ...]
    kind: str
    tx_id: str
    timestamp: str
    forgotten_client: str | None = None


@dataclass(frozen=True)
class GenerationRecord:
    """Hash of the adapter generated for ``client_id`` in ``round`` from a checkpoint."""

    round: int
    client_id: str
    adapter_hash: str
    checkpoint_hash: str
    checkpoint_round: int
    checkpoint_version: int
    tx_id: str
    timestamp: str


@dataclass(frozen=True)
class ForgetRecord:
    """A forget event; its new checkpoint is ``(round, version)``."""

    client_id: str
    round: int
    version: int
    mode: str
    weights_hash: str
    merkle_root: str
    adapters_root: str
    remaining_client_ids: tuple[str, ...]
    tx_id: str
    timestamp: str
    guarantee: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ClientChange:
    """One committed modification of a client record (from the key's history)."""

    tx_id: str
    timestamp: str
    is_delete: bool
    value: ClientRecord | None


@dataclass(frozen=True)
class ClientHistory:
    """Everything the ledger knows about one client."""

    client: ClientRecord
    changes: tuple[ClientChange, ...]
    generations: tuple[GenerationRecord, ...]
    forget: ForgetRecord | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClientHistory:
        changes = tuple(
            ClientChange(
                c["tx_id"],
                c["timestamp"],
                bool(c["is_delete"]),
                None if c["value"] is None else from_json(ClientRecord, c["value"]),
            )
            for c in data["changes"]
        )
        return cls(
            client=from_json(ClientRecord, data["client"]),
            changes=changes,
            generations=tuple(from_json(GenerationRecord, g) for g in data["generations"]),
            forget=None if data["forget"] is None else from_json(ForgetRecord, data["forget"]),
        )


@dataclass(frozen=True)
class RoundRecords:
    """A round's checkpoints (every version) and generations."""

    round: int
    checkpoints: tuple[CheckpointRecord, ...]
    generations: tuple[GenerationRecord, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundRecords:
        return cls(
            round=int(data["round"]),
            checkpoints=tuple(from_json(CheckpointRecord, c) for c in data["checkpoints"]),
            generations=tuple(from_json(GenerationRecord, g) for g in data["generations"]),
        )


@dataclass(frozen=True)
class MembershipProof:
    """Inclusion proof of a client's commitment in a checkpoint's Merkle root."""

    client_id: str
    commitment: str
    round: int
    version: int
    index: int
    size: int
    path: tuple[str, ...]
    root: str

    def verify(self, expected_root: str | None = None) -> bool:
        """Check the path; also that the root is ``expected_root`` when given."""
        if expected_root is not None and expected_root != self.root:
            return False
        return verify_membership(self.client_id, self.commitment, self.index, self.size, list(self.path), self.root)


@dataclass(frozen=True)
class Receipt:
    """Outcome of a write.

    Attributes
    ----------
    status
        ``"committed"`` (on the ledger now) or ``"queued"`` (waiting in the outbox
        because the ledger is unreachable; it will be sent in order).
    replayed
        The ledger already held this exact record; nothing new was written.
    record
        The stored record as the contract returned it (``None`` while queued).
    """

    function: str
    status: str
    replayed: bool = False
    record: Mapping[str, Any] | None = None

    @property
    def committed(self) -> bool:
        return self.status == "committed"
