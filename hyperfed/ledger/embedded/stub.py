"""A chaincode stub with Fabric peer semantics, and the simulation of one transaction.

The contract runs exactly as on a peer: :func:`simulate_transaction` hands a
:class:`PeerStub` to the real ``ContractChaincode`` dispatcher of fabric-chaincode-python,
and the result is a :class:`Simulation` (payload + read set + write set) that a ledger
may later validate and commit. Peer semantics reproduced here:

* reads see **committed state only** — never the transaction's own writes;
* writes are buffered; nothing is applied unless the ledger commits the simulation;
* every read records the version it saw (``None`` for an absent key) for MVCC checks,
  and range scans record their result for phantom checks;
* ``get_history_for_key`` lists modifications newest first, with delete flags;
* ``get_state_by_range`` is lexical and end-exclusive (``""`` = unbounded) and skips
  composite keys (those starting with ``\\x00``);
* a duplicate transaction id is refused.

Committed state comes from a :class:`StateReader` (the embedded ledger's SQLite file).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fabric_protos.ledger.queryresult import kv_query_result_pb2 as kv_pb
from google.protobuf.timestamp_pb2 import Timestamp

from chaincode.fabric_compat import ChaincodeStubInterface, ContractChaincode, ResponseCode
from hyperfed.errors import ContractViolationError, LedgerConflictError

__all__ = [
    "COMPOSITE_KEY_PREFIX",
    "HistoryEntry",
    "RangeRead",
    "Simulation",
    "StateReader",
    "PeerStub",
    "simulate_transaction",
]

COMPOSITE_KEY_PREFIX = "\x00"


@dataclass(frozen=True)
class HistoryEntry:
    """One committed modification of a key (``value is None`` for a delete)."""

    tx_id: str
    timestamp: float
    value: bytes | None


@dataclass(frozen=True)
class RangeRead:
    """A range scan and the ``(key, version)`` pairs it returned, for phantom checks."""

    start: str
    end: str
    keys: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Simulation:
    """An executed-but-uncommitted transaction (an endorsed proposal, in Fabric terms).

    Attributes
    ----------
    reads
        Key -> committed version seen (``None``: the key was absent).
    writes
        Key -> new value (``None``: delete). Applied only if the ledger commits.
    range_reads
        Range scans with their results; a commit re-runs them to catch phantoms.
    """

    tx_id: str
    function: str
    args: tuple[str, ...]
    creator_msp: str
    timestamp: float
    payload: bytes
    reads: dict[str, int | None] = field(default_factory=dict)
    writes: dict[str, bytes | None] = field(default_factory=dict)
    range_reads: tuple[RangeRead, ...] = ()


class StateReader(Protocol):
    """Committed state as a ledger exposes it to simulations."""

    def read(self, key: str) -> tuple[bytes, int] | None:
        """``(value, version)`` of a key, or ``None`` if absent."""

    def read_range(self, start: str, end: str) -> list[tuple[str, bytes, int]]:
        """``(key, value, version)`` with ``start <= key < end`` (``""``: unbounded),
        in lexical order, composite keys excluded."""

    def read_history(self, key: str) -> list[HistoryEntry]:
        """Every committed modification of ``key``, newest first."""

    def has_transaction(self, tx_id: str) -> bool:
        """Whether a transaction with this id was already committed."""


def _timestamp(seconds: float) -> Timestamp:
    whole = math.floor(seconds)
    nanos = int(round((seconds - whole) * 1e9))
    if nanos >= 10**9:  # rounding carried into the next second
        whole, nanos = whole + 1, nanos - 10**9
    return Timestamp(seconds=int(whole), nanos=nanos)


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"a state key must be a non-empty string, got {key!r}")
    return key


class _ResultIterator:
    """Async iterator over already-fetched results, like the shim's query iterators."""

    def __init__(self, items: Iterable[Any]) -> None:
        self._items = list(items)

    def __aiter__(self) -> _ResultIterator:
        return self

    async def __anext__(self) -> Any:
        if not self._items:
            raise StopAsyncIteration
        return self._items.pop(0)

    async def aclose(self) -> None:
        self._items.clear()


class PeerStub(ChaincodeStubInterface):
    """The subset of ``fabric_shim.ChaincodeStub`` the contract uses, over committed state.

    Parameters
    ----------
    reader
        Committed state. Reads go straight to it; writes stay in :attr:`writes`.
    function, args
        The invoked transaction, as ``get_function_and_parameters`` returns them.
    tx_id, creator_msp, timestamp
        What ``get_txid``, ``get_creator()["mspid"]`` and ``get_tx_timestamp`` return.
    """

    def __init__(
        self,
        reader: StateReader,
        *,
        function: str,
        args: Sequence[str],
        tx_id: str,
        creator_msp: str,
        timestamp: float,
        channel_id: str = "embedded",
    ) -> None:
        self._reader = reader
        self._function, self._args = function, [str(a) for a in args]
        self._tx_id, self._creator_msp = tx_id, creator_msp
        self._timestamp, self._channel_id = timestamp, channel_id
        self.reads: dict[str, int | None] = {}
        self.writes: dict[str, bytes | None] = {}
        self.range_reads: list[RangeRead] = []

    # -------------------------------------------------------------- proposal data

    def get_function_and_parameters(self) -> tuple[str, list[str]]:
        return self._function, list(self._args)

    def get_txid(self) -> str:
        return self._tx_id

    def get_channel_id(self) -> str:
        return self._channel_id

    def get_creator(self) -> dict[str, Any]:
        return {"mspid": self._creator_msp, "idBytes": b""}

    def get_tx_timestamp(self) -> Timestamp:
        return _timestamp(self._timestamp)

    def get_transient(self) -> dict[str, bytes]:
        return {}

    # ---------------------------------------------------------------------- state

    def _note_read(self, key: str, version: int | None) -> None:
        # Fabric keeps the first version a transaction saw of each key.
        self.reads.setdefault(key, version)

    async def get_state(self, key: str) -> bytes:
        """Committed value of ``key``; ``b""`` when absent (like the shim)."""
        found = self._reader.read(_check_key(key))
        self._note_read(key, None if found is None else found[1])
        return b"" if found is None else found[0]

    async def put_state(self, key: str, value: bytes | str) -> None:
        """Buffer a write; later reads in this transaction still see committed state."""
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, (bytes, bytearray)) or not value:
            raise ValueError(f"value for {key!r} must be non-empty bytes; use delete_state")
        self.writes[_check_key(key)] = bytes(value)

    async def delete_state(self, key: str) -> None:
        """Buffer a delete."""
        self.writes[_check_key(key)] = None

    async def get_state_by_range(self, start_key: str, end_key: str) -> _ResultIterator:
        """Committed ``KV`` records with ``start_key <= key < end_key``, composite keys skipped."""
        for bound in (start_key, end_key):
            if bound and bound.startswith(COMPOSITE_KEY_PREFIX):
                raise ValueError("range bounds must be simple keys, not composite keys")
        rows = self._reader.read_range(start_key or "", end_key or "")
        self.range_reads.append(RangeRead(start_key or "", end_key or "", tuple((k, v) for k, _, v in rows)))
        return _ResultIterator(kv_pb.KV(namespace="hyperfed", key=k, value=val) for k, val, _ in rows)

    async def get_history_for_key(self, key: str) -> _ResultIterator:
        """``KeyModification`` records of ``key``, newest first (not MVCC-protected)."""
        mods = [
            kv_pb.KeyModification(
                tx_id=h.tx_id, value=h.value or b"", timestamp=_timestamp(h.timestamp), is_delete=h.value is None
            )
            for h in self._reader.read_history(_check_key(key))
        ]
        return _ResultIterator(mods)


def _run_to_completion(coroutine: Any) -> Any:
    """Drive a coroutine that never really suspends (every stub call returns at once).

    Not using an event loop keeps simulations usable from threads and from code that
    already runs a loop (Jupyter, a grpc.aio server).
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the contract awaited something other than the embedded stub")


def simulate_transaction(
    chaincode: ContractChaincode,
    reader: StateReader,
    function: str,
    args: Sequence[str],
    *,
    tx_id: str,
    creator_msp: str,
    timestamp: float,
    check_duplicate: bool = True,
) -> Simulation:
    """Execute one transaction of ``chaincode`` against committed state, writing nothing.

    Raises
    ------
    ContractViolationError
        The contract refused (the message starts with its ``[code]``).
    LedgerConflictError
        ``check_duplicate`` and a transaction with ``tx_id`` is already committed.
    """
    if check_duplicate and reader.has_transaction(tx_id):
        raise LedgerConflictError(f"duplicate transaction id {tx_id}: already committed")
    stub = PeerStub(reader, function=function, args=args, tx_id=tx_id, creator_msp=creator_msp, timestamp=timestamp)
    response = _run_to_completion(chaincode.invoke(stub))
    if response.status >= ResponseCode.ERRORTHRESHOLD:
        raise ContractViolationError(f"{function} refused: {response.message}")
    return Simulation(
        tx_id=tx_id,
        function=function,
        args=tuple(stub.get_function_and_parameters()[1]),
        creator_msp=creator_msp,
        timestamp=float(timestamp),
        payload=bytes(response.payload),
        reads=dict(stub.reads),
        writes=dict(stub.writes),
        range_reads=tuple(stub.range_reads),
    )
