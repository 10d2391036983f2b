"""The HyperFed contract: who trained on what, and who was forgotten — hashes only.

Runs unchanged on a Fabric peer (CCaaS) and inside :class:`hyperfed.ledger.EmbeddedLedger`.
Only hashes, salted commitments and Merkle roots are stored, never weights or embeddings.

Invariants (each refusal raises ``ContractError`` whose text starts with ``[code]``):

* **One writer.** ``init_ledger(writer_msp)`` is the first transaction; it must come from
  that MSP and can never be changed. Every other submit must come from the writer MSP.
* **Known, live clients.** Generations and checkpoints only name registered clients that
  were not forgotten. **Forget is final**: a forgotten id can be neither re-registered,
  forgotten again, nor given a generation.
* **Rounds move forward.** ``record_checkpoint`` needs a round above the latest
  checkpoint's. ``record_forget`` records a new checkpoint *version* of the current round
  (``version = latest.version + 1``) or of a later round (version 0); it never goes back.
  A checkpoint is addressed by ``(round, version)``; training checkpoints have version 0.
* **Checkpoints commit to their embeddings.** A checkpoint carries
  ``{client id: commitment}`` — the salted commitment of each client's embedding *in that
  checkpoint*. Every listed client must be registered and not forgotten; the contract
  computes the Merkle root itself (:func:`chaincode.merkle.keyed_merkle_root`) and stores
  one leaf per client, so ``get_membership_proof`` can prove any client's commitment
  against the root even after others' embeddings (and salts) were destroyed.
* **Generations reference a recorded checkpoint** (by its weights hash): record the
  initial weights as round 0 before generating from them. One key per client per round;
  it may only be replaced by an adapter regenerated from a *later* checkpoint.
* **Idempotent replays.** Submitting a record identical to one already stored writes
  nothing and answers ``{"replayed": true, "record": …}``, so a retry after a crash (or a
  lost reply) never records anything twice.
* **A checkpoint's other files** (its generator config, its optimizer state) are recorded
  by ``record_checkpoint_files`` as ``{part: sha256}`` per (round, shared-weights hash) of
  a recorded checkpoint; a recorded part never changes, parts may only be added.
* Time comes from the transaction timestamp only; no clock, no randomness.
"""

from __future__ import annotations

from chaincode.fabric_compat import Contract, TransactionContextInterface
from chaincode.merkle import keyed_merkle_root
from chaincode.queries import ContractQueries
from chaincode.records import (
    CONFIG_KEY,
    HEAD_KEY,
    MAX_VERSION,
    ContractError,
    check_client_id,
    check_commitments,
    check_digest,
    check_file_digests,
    check_guarantee,
    check_mode,
    check_msp,
    check_round,
    checkpoint_key,
    checkpoint_prefix,
    client_generation_key,
    client_key,
    files_key,
    forget_key,
    generation_key,
    timestamp_iso,
    weights_key,
)
from chaincode.state import (
    answer,
    commitments_root,
    get_record,
    live_client,
    put_record,
    scan_records,
    store_checkpoint,
    writer_tx,
)

__all__ = ["HyperFedContract", "SUBMIT_TRANSACTIONS", "EVALUATE_TRANSACTIONS"]

SUBMIT_TRANSACTIONS = (
    "init_ledger",
    "register_client",
    "record_checkpoint",
    "record_generation",
    "record_forget",
    "record_checkpoint_files",
)
EVALUATE_TRANSACTIONS = (
    "get_config",
    "get_client",
    "list_clients",
    "get_client_history",
    "get_round",
    "get_checkpoint",
    "get_latest_checkpoint",
    "list_checkpoints",
    "list_generations",
    "list_forgets",
    "get_membership_proof",
    "get_checkpoint_commitments",
    "list_checkpoint_files",
)


class HyperFedContract(ContractQueries, Contract):
    """Accountability records of HyperFed training and unlearning (see module docstring);
    the evaluate (query) transactions come from :class:`chaincode.queries.ContractQueries`."""

    Name = "hyperfed"

    def get_evaluate_transactions(self) -> list[str]:
        return list(EVALUATE_TRANSACTIONS)

    # ------------------------------------------------------------------ submit

    async def init_ledger(self, ctx: TransactionContextInterface, writer_msp: str) -> str:
        """Name the only MSP allowed to write. Once; the caller must belong to it."""
        stub = ctx.get_stub()
        check_msp(writer_msp)
        config = await get_record(stub, "config", CONFIG_KEY)
        if config is not None:
            if config["writer_msp"] == writer_msp:
                return answer(config, replayed=True)
            raise ContractError("already-configured", f"the writer is already {config['writer_msp']!r}")
        caller = ctx.get_client_identity().get_mspid()
        if caller != writer_msp:
            raise ContractError("not-writer", f"init_ledger must be sent by {writer_msp!r} itself, not {caller!r}")
        config = {
            "writer_msp": writer_msp,
            "tx_id": stub.get_txid(),
            "timestamp": timestamp_iso(stub.get_tx_timestamp()),
        }
        await put_record(stub, "config", CONFIG_KEY, config)
        return answer(config)

    async def register_client(self, ctx: TransactionContextInterface, client_id: str, commitment: str) -> str:
        """Register a client with the salted commitment to its embedding."""
        stub, tx = await writer_tx(ctx)
        check_client_id(client_id)
        check_digest("commitment", commitment)
        existing = await get_record(stub, "client", client_key(client_id))
        if existing is not None:
            if existing["status"] != "active":
                raise ContractError(
                    "forgotten-client",
                    f"client {client_id!r} was forgotten; forgetting is final, use a new id",
                )
            if existing["commitment"] == commitment:
                return answer(existing, replayed=True)
            raise ContractError("duplicate-client", f"client {client_id!r} is registered with another commitment")
        record = {
            "client_id": client_id,
            "commitment": commitment,
            "status": "active",
            "registered_tx": tx["tx_id"],
            "registered_at": tx["timestamp"],
            "forgotten_round": None,
            "forgotten_tx": None,
            "forgotten_at": None,
        }
        await put_record(stub, "client", client_key(client_id), record)
        return answer(record)

    async def record_checkpoint(
        self,
        ctx: TransactionContextInterface,
        round_no: int,
        weights_hash: str,
        commitments: str,
    ) -> str:
        """Record round ``round_no``'s shared-weights hash and its embeddings' commitments.

        ``commitments`` is a JSON object ``{client id: commitment}`` of the embeddings in
        this checkpoint; the record stores their Merkle root and one leaf per client.
        """
        stub, tx = await writer_tx(ctx)
        check_round(round_no)
        check_digest("weights_hash", weights_hash)
        leaves = check_commitments("commitments", commitments)
        fact = {
            "round": round_no,
            "version": 0,
            "weights_hash": weights_hash,
            "merkle_root": keyed_merkle_root(leaves),
            "client_ids": list(leaves),
            "kind": "train",
            "forgotten_client": None,
        }
        head = await get_record(stub, "head", HEAD_KEY)
        if head is not None and round_no <= head["round"]:
            existing = await get_record(stub, "checkpoint", checkpoint_key(round_no, 0))
            if existing is not None and all(existing[k] == v for k, v in fact.items()):
                return answer(existing, replayed=True)
            raise ContractError(
                "round-order",
                f"checkpoint rounds move forward: round {round_no} is not after the latest "
                f"checkpoint (round {head['round']}, version {head['version']})",
            )
        await commitments_root(stub, leaves)  # every listed client is registered and live
        record = dict(fact, **tx)
        await store_checkpoint(stub, record, leaves)
        return answer(record)

    async def record_generation(
        self,
        ctx: TransactionContextInterface,
        round_no: int,
        client_id: str,
        adapter_hash: str,
        checkpoint_hash: str,
    ) -> str:
        """Record the hash of the adapter generated for a client in a round."""
        stub, tx = await writer_tx(ctx)
        check_round(round_no)
        check_client_id(client_id)
        check_digest("adapter_hash", adapter_hash)
        check_digest("checkpoint_hash", checkpoint_hash)
        existing = await get_record(stub, "generation", generation_key(round_no, client_id))
        if existing is not None and (existing["adapter_hash"], existing["checkpoint_hash"]) == (
            adapter_hash,
            checkpoint_hash,
        ):
            return answer(existing, replayed=True)
        await live_client(stub, client_id)
        source = await get_record(stub, "weights", weights_key(checkpoint_hash))
        if source is None:
            raise ContractError(
                "unknown-checkpoint",
                f"no checkpoint with weights hash {checkpoint_hash} was recorded; record it "
                "first (the initial weights as round 0)",
            )
        if round_no < source["round"]:
            raise ContractError(
                "round-order",
                f"a round-{round_no} adapter cannot come from a checkpoint first recorded at round {source['round']}",
            )
        if existing is not None and (source["round"], source["version"]) <= (
            existing["checkpoint_round"],
            existing["checkpoint_version"],
        ):
            raise ContractError(
                "duplicate-generation",
                f"client {client_id!r} already has a round-{round_no} adapter; it can only be "
                "replaced by one regenerated from a later checkpoint",
            )
        record = {
            "round": round_no,
            "client_id": client_id,
            "adapter_hash": adapter_hash,
            "checkpoint_hash": checkpoint_hash,
            "checkpoint_round": source["round"],
            "checkpoint_version": source["version"],
            **tx,
        }
        await put_record(stub, "generation", generation_key(round_no, client_id), record)
        await put_record(stub, "generation", client_generation_key(client_id, round_no), record)
        return answer(record)

    async def record_forget(
        self,
        ctx: TransactionContextInterface,
        client_id: str,
        round_no: int,
        weights_hash: str,
        commitments: str,
        adapters_root: str,
        mode: str,
        guarantee: str,
    ) -> str:
        """Forget a client: final, with the new checkpoint and regenerated adapters' root.

        ``commitments`` is the new checkpoint's ``{client id: commitment}`` over the
        remaining clients (it must not list the forgotten one); ``guarantee`` what the
        forget guarantees (:func:`chaincode.records.check_guarantee`: exact, (ε, δ)-DP with
        its ε and δ, or none), recorded with the event.
        """
        stub, tx = await writer_tx(ctx)
        check_client_id(client_id)
        check_round(round_no)
        for name, value in (("weights_hash", weights_hash), ("adapters_root", adapters_root)):
            check_digest(name, value)
        check_mode(mode)
        stated = check_guarantee(guarantee)
        leaves = check_commitments("commitments", commitments)
        if client_id in leaves:
            raise ContractError("bad-argument", "commitments lists the forgotten client")
        fact = {
            "client_id": client_id,
            "round": round_no,
            "weights_hash": weights_hash,
            "merkle_root": keyed_merkle_root(leaves),
            "adapters_root": adapters_root,
            "mode": mode,
            "guarantee": stated,
            "remaining_client_ids": list(leaves),
        }
        existing = await get_record(stub, "forget", forget_key(client_id))
        if existing is not None:
            if all(existing.get(k) == v for k, v in fact.items()):  # (a record from before a field: not a replay)
                return answer(existing, replayed=True)
            raise ContractError(
                "forgotten-client",
                f"client {client_id!r} was already forgotten at round {existing['round']}; forget is final",
            )
        client = await live_client(stub, client_id)
        head = await get_record(stub, "head", HEAD_KEY)
        if head is not None and round_no < head["round"]:
            raise ContractError(
                "round-order",
                f"a forget at round {round_no} would go back before the latest checkpoint (round {head['round']})",
            )
        version = head["version"] + 1 if head is not None and head["round"] == round_no else 0
        if version > MAX_VERSION:
            raise ContractError("round-order", f"round {round_no} has too many checkpoint versions")
        await commitments_root(stub, leaves)  # the remaining clients are registered and live
        ckpt = {
            "round": round_no,
            "version": version,
            "weights_hash": weights_hash,
            "merkle_root": fact["merkle_root"],
            "client_ids": list(leaves),
            "kind": "forget",
            "forgotten_client": client_id,
            **tx,
        }
        record = dict(fact, version=version, **tx)
        client = dict(
            client, status="forgotten", forgotten_round=round_no, forgotten_tx=tx["tx_id"], forgotten_at=tx["timestamp"]
        )
        await put_record(stub, "client", client_key(client_id), client)
        await put_record(stub, "forget", forget_key(client_id), record)
        await store_checkpoint(stub, ckpt, leaves)
        return answer(record)

    async def record_checkpoint_files(
        self, ctx: TransactionContextInterface, round_no: int, weights_hash: str, files: str
    ) -> str:
        """Record the digests of the other files of round ``round_no``'s checkpoint with
        shared weights ``weights_hash`` (its generator config, its optimizer state).

        ``files`` is a JSON object ``{part: sha256 hex}``, e.g. ``{"config": …,
        "optimizer/shared": …, "optimizer/client/<id>": …}``. A recorded part never
        changes; later records may only add parts (a forget that keeps the shared weights
        sends a subset: a replay).
        """
        stub, tx = await writer_tx(ctx)
        check_round(round_no)
        check_digest("weights_hash", weights_hash)
        parts = check_file_digests("files", files)
        key = files_key(round_no, weights_hash)
        existing = await get_record(stub, "files", key)
        merged = dict(existing["files"]) if existing is not None else {}
        changed = sorted(p for p in parts if p in merged and merged[p] != parts[p])
        if changed:
            raise ContractError(
                "files-recorded", f"checkpoint ({round_no}, {weights_hash[:12]}…) has other digests of {changed[:3]}"
            )
        if existing is not None and set(parts) <= set(merged):
            return answer(existing, replayed=True)
        checkpoints = await scan_records(stub, "checkpoint", checkpoint_prefix(round_no))
        if not any(c["weights_hash"] == weights_hash for c in checkpoints):
            raise ContractError(
                "unknown-checkpoint", f"no checkpoint of round {round_no} has weights {weights_hash[:12]}…"
            )
        record = {"round": round_no, "weights_hash": weights_hash, "files": dict(sorted({**merged, **parts}.items()))}
        await put_record(stub, "files", key, dict(record, **tx))
        return answer(dict(record, **tx))
