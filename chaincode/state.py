"""Asynchronous state access shared by the contract's transactions.

Thin helpers over the chaincode stub (``get_state``/``put_state``/range scans) plus the
checks several transactions share: the writer-MSP gate, "live client" lookup, and a
checkpoint's commitments: the contract computes their Merkle root itself, stores one leaf
key per client, and re-checks the leaves against the root whenever it serves a proof.
"""

from __future__ import annotations

import json
from typing import Any

from chaincode.merkle import keyed_merkle_root
from chaincode.records import (
    CONFIG_KEY,
    HEAD_KEY,
    ContractError,
    check_client_id,
    checkpoint_key,
    client_key,
    decode,
    encode,
    leaf_key,
    leaf_prefix,
    prefix_end,
    timestamp_iso,
    weights_key,
)

__all__ = [
    "get_record",
    "put_record",
    "scan_records",
    "answer",
    "dump",
    "writer_tx",
    "live_client",
    "commitments_root",
    "store_checkpoint",
    "checkpoint_leaves",
]


async def get_record(stub: Any, record_type: str, key: str) -> dict[str, Any] | None:
    """The decoded record at ``key`` (committed state), or ``None`` if absent."""
    return decode(record_type, key, await stub.get_state(key))


async def put_record(stub: Any, record_type: str, key: str, record: dict[str, Any]) -> None:
    """Buffer a write of ``record`` (canonical JSON) at ``key``."""
    await stub.put_state(key, encode(record_type, record))


async def scan_records(stub: Any, record_type: str, prefix: str) -> list[dict[str, Any]]:
    """Every record whose key starts with ``prefix``, in key order."""
    records = []
    async for kv in await stub.get_state_by_range(prefix, prefix_end(prefix)):
        records.append(decode(record_type, kv.key, kv.value))
    return records


def answer(record: dict[str, Any], replayed: bool = False) -> str:
    """Payload of a submit transaction: the stored record and whether it was a replay."""
    return json.dumps({"replayed": replayed, "record": record}, sort_keys=True)


def dump(value: Any) -> str:
    """Payload of a query."""
    return json.dumps(value, sort_keys=True)


async def writer_tx(ctx: Any) -> tuple[Any, dict[str, str]]:
    """Refuse unless the ledger is configured and the caller is the writer MSP."""
    stub = ctx.get_stub()
    config = await get_record(stub, "config", CONFIG_KEY)
    if config is None:
        raise ContractError("not-configured", "the ledger has no writer yet: submit init_ledger(writer_msp) first")
    msp = ctx.get_client_identity().get_mspid()
    if msp != config["writer_msp"]:
        raise ContractError("not-writer", f"MSP {msp!r} may not write; only {config['writer_msp']!r} may")
    return stub, {"tx_id": stub.get_txid(), "timestamp": timestamp_iso(stub.get_tx_timestamp())}


async def live_client(stub: Any, client_id: str) -> dict[str, Any]:
    """The client's record; refuses unknown and forgotten clients."""
    client = await get_record(stub, "client", client_key(check_client_id(client_id)))
    if client is None:
        raise ContractError("unknown-client", f"client {client_id!r} is not registered")
    if client["status"] != "active":
        raise ContractError(
            "forgotten-client",
            f"client {client_id!r} was forgotten at round {client['forgotten_round']}; forgetting is final",
        )
    return client


async def commitments_root(stub: Any, commitments: dict[str, str]) -> str:
    """The keyed Merkle root of ``commitments``; refuses unknown and forgotten clients."""
    for client_id in commitments:
        await live_client(stub, client_id)
    return keyed_merkle_root(commitments)


async def _index_weights(stub: Any, ckpt: dict[str, Any]) -> None:
    key = weights_key(ckpt["weights_hash"])
    if await get_record(stub, "weights", key) is None:
        first = {k: ckpt[k] for k in ("weights_hash", "round", "version")}
        await put_record(stub, "weights", key, first)


async def store_checkpoint(stub: Any, ckpt: dict[str, Any], commitments: dict[str, str]) -> None:
    """Write a checkpoint and its leaves, move the head to it and index its weights hash.

    ``commitments`` are the checkpoint's ``{client id: commitment}`` (its Merkle leaves):
    one key per client, so a proof for one client never needs the others' records.
    """
    round_no, version = ckpt["round"], ckpt["version"]
    await put_record(stub, "checkpoint", checkpoint_key(round_no, version), ckpt)
    for client_id, commitment in commitments.items():
        leaf = {"client_id": client_id, "commitment": commitment, "round": round_no, "version": version}
        await put_record(stub, "leaf", leaf_key(round_no, version, client_id), leaf)
    await put_record(stub, "head", HEAD_KEY, {"round": ckpt["round"], "version": ckpt["version"]})
    await _index_weights(stub, ckpt)


async def checkpoint_leaves(stub: Any, ckpt: dict[str, Any]) -> dict[str, str]:
    """``{client id: commitment}`` of a stored checkpoint, checked against its root.

    Raises ``corrupt-state`` when the stored leaves are not exactly the checkpoint's
    clients or do not hash to its Merkle root.
    """
    prefix = leaf_prefix(ckpt["round"], ckpt["version"])
    leaves = {leaf["client_id"]: leaf["commitment"] for leaf in await scan_records(stub, "leaf", prefix)}
    where = f"checkpoint ({ckpt['round']}, {ckpt['version']})"
    if sorted(leaves) != list(ckpt["client_ids"]):
        raise ContractError("corrupt-state", f"the stored leaves of {where} are not its clients")
    if keyed_merkle_root(leaves) != ckpt["merkle_root"]:
        raise ContractError("corrupt-state", f"the stored leaves of {where} do not hash to its merkle_root")
    return leaves
