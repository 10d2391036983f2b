"""The HyperFed contract's evaluate (query) transactions: read-only, never committed.

A mixin of :class:`chaincode.contract.HyperFedContract`, whose ``get_evaluate_transactions``
names them; Fabric's contract API finds them on the contract as inherited methods.
"""

from __future__ import annotations

import json

from chaincode.fabric_compat import TransactionContextInterface
from chaincode.merkle import keyed_inclusion_proof
from chaincode.records import (
    CONFIG_KEY,
    HEAD_KEY,
    MAX_VERSION,
    ContractError,
    check_client_id,
    check_round,
    checkpoint_key,
    checkpoint_prefix,
    client_generation_prefix,
    client_key,
    decode,
    forget_key,
    generation_prefix,
    timestamp_iso,
)
from chaincode.state import checkpoint_leaves, dump, get_record, scan_records

__all__ = ["ContractQueries"]


class ContractQueries:
    """Read-only transactions over the contract's records (see :mod:`chaincode.contract`)."""

    async def list_checkpoint_files(self, ctx: TransactionContextInterface) -> str:
        """Every checkpoint's file digests, in (round, weights hash) order."""
        return dump(await scan_records(ctx.get_stub(), "files", "files/"))

    async def get_config(self, ctx: TransactionContextInterface) -> str:
        """The writer MSP and when it was set."""
        config = await get_record(ctx.get_stub(), "config", CONFIG_KEY)
        if config is None:
            raise ContractError("not-configured", "init_ledger has not been submitted yet")
        return dump(config)

    async def get_client(self, ctx: TransactionContextInterface, client_id: str) -> str:
        """One client's registration and status."""
        client = await get_record(ctx.get_stub(), "client", client_key(check_client_id(client_id)))
        if client is None:
            raise ContractError("unknown-client", f"client {client_id!r} is not registered")
        return dump(client)

    async def list_clients(self, ctx: TransactionContextInterface) -> str:
        """Every client record, by id."""
        return dump(await scan_records(ctx.get_stub(), "client", "client/"))

    async def get_client_history(self, ctx: TransactionContextInterface, client_id: str) -> str:
        """Status, every change of the client record (newest first), generations, forget."""
        stub = ctx.get_stub()
        client = json.loads(await self.get_client(ctx, client_id))
        key, changes = client_key(client_id), []
        async for mod in await stub.get_history_for_key(key):
            changes.append(
                {
                    "tx_id": mod.tx_id,
                    "timestamp": timestamp_iso(mod.timestamp),
                    "is_delete": bool(mod.is_delete),
                    "value": None if mod.is_delete else decode("client", key, mod.value),
                }
            )
        indexed = await scan_records(stub, "generation", client_generation_prefix(client_id))
        # the prefix of "a" also covers a client named "a/b": keep this client's only
        generations = [g for g in indexed if g["client_id"] == client_id]
        forget = await get_record(stub, "forget", forget_key(client_id))
        return dump({"client": client, "changes": changes, "generations": generations, "forget": forget})

    async def get_round(self, ctx: TransactionContextInterface, round_no: int) -> str:
        """A round's checkpoints (all versions) and generations."""
        stub = ctx.get_stub()
        check_round(round_no)
        return dump(
            {
                "round": round_no,
                "checkpoints": await scan_records(stub, "checkpoint", checkpoint_prefix(round_no)),
                "generations": await scan_records(stub, "generation", generation_prefix(round_no)),
            }
        )

    async def get_checkpoint(self, ctx: TransactionContextInterface, round_no: int, version: int) -> str:
        """Checkpoint ``(round, version)``; ``version = -1`` means the round's latest."""
        stub = ctx.get_stub()
        check_round(round_no)
        if version == -1:
            found = await scan_records(stub, "checkpoint", checkpoint_prefix(round_no))
            ckpt = found[-1] if found else None
        elif 0 <= version <= MAX_VERSION:
            ckpt = await get_record(stub, "checkpoint", checkpoint_key(round_no, version))
        else:
            raise ContractError("bad-argument", f"version must be -1 or in [0, {MAX_VERSION}]")
        if ckpt is None:
            raise ContractError("unknown-checkpoint", f"no checkpoint at round {round_no} version {version}")
        return dump(ckpt)

    async def get_latest_checkpoint(self, ctx: TransactionContextInterface) -> str:
        """The newest checkpoint, or ``null`` before the first."""
        stub = ctx.get_stub()
        head = await get_record(stub, "head", HEAD_KEY)
        if head is None:
            return dump(None)
        key = checkpoint_key(head["round"], head["version"])
        return dump(await get_record(stub, "checkpoint", key))

    async def list_checkpoints(self, ctx: TransactionContextInterface) -> str:
        """Every checkpoint in (round, version) order."""
        return dump(await scan_records(ctx.get_stub(), "checkpoint", "ckpt/"))

    async def list_generations(self, ctx: TransactionContextInterface) -> str:
        """Every generation record in (round, client id) order."""
        return dump(await scan_records(ctx.get_stub(), "generation", "gen/"))

    async def list_forgets(self, ctx: TransactionContextInterface) -> str:
        """Every forget event, by client id."""
        return dump(await scan_records(ctx.get_stub(), "forget", "forget/"))

    async def get_membership_proof(
        self, ctx: TransactionContextInterface, client_id: str, round_no: int, version: int
    ) -> str:
        """Merkle inclusion proof of a client's commitment in a checkpoint's root."""
        stub = ctx.get_stub()
        ckpt = json.loads(await self.get_checkpoint(ctx, round_no, version))
        if client_id not in ckpt["client_ids"]:
            raise ContractError(
                "not-in-checkpoint",
                f"client {client_id!r} is not in checkpoint ({ckpt['round']}, {ckpt['version']})",
            )
        commitments = await checkpoint_leaves(stub, ckpt)
        index, path = keyed_inclusion_proof(commitments, client_id)
        return dump(
            {
                "client_id": client_id,
                "commitment": commitments[client_id],
                "round": ckpt["round"],
                "version": ckpt["version"],
                "index": index,
                "size": len(commitments),
                "path": path,
                "root": ckpt["merkle_root"],
            }
        )

    async def get_checkpoint_commitments(self, ctx: TransactionContextInterface, round_no: int, version: int) -> str:
        """Every ``{client id: commitment}`` leaf of a checkpoint, checked against its root."""
        ckpt = json.loads(await self.get_checkpoint(ctx, round_no, version))
        commitments = await checkpoint_leaves(ctx.get_stub(), ckpt)
        return dump(
            {
                "round": ckpt["round"],
                "version": ckpt["version"],
                "merkle_root": ckpt["merkle_root"],
                "commitments": commitments,
            }
        )
