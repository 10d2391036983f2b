"""The CCaaS server on the wire: this test plays the Fabric peer over real gRPC.

A peer dials the chaincode server, opens ``Connect`` and expects REGISTER; it answers
REGISTERED and READY, sends TRANSACTION messages carrying a signed proposal, serves the
chaincode's GET_STATE / PUT_STATE / range / history requests from its world state, and
waits for COMPLETED (or ERROR). The contract is the real HyperFed contract.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from fabric_protos.ledger.queryresult import kv_query_result_pb2 as kv_pb
from fabric_protos.peer import chaincode_pb2, chaincode_shim_pb2, chaincode_shim_pb2_grpc, proposal_response_pb2

from chaincode.ccaas import ChaincodeServer, build_chaincode
from chaincode.fabric_compat import Contract, ContractChaincode, TransactionContextInterface
from hyperfed.ledger.devnet.pki import new_ca, new_identity
from hyperfed.ledger.gateway.proposal import build_proposal, parse_proposal

Msg = chaincode_shim_pb2.ChaincodeMessage
Shim = chaincode_shim_pb2
CCID = "hyperfed_1.0:0123abcd"
REPO_ROOT = Path(__file__).resolve().parents[2]
DIGEST = "ab" * 32


def transaction(identity, *args: str, payload: bytes | None = None) -> Msg:
    """A TRANSACTION message as a peer sends it: input args plus the signed proposal."""
    signed = build_proposal(
        identity, channel="mychannel", chaincode="hyperfed", args=[a.encode() for a in args]
    ).signed_proposal
    if payload is None:
        payload = chaincode_pb2.ChaincodeInput(args=[a.encode() for a in args]).SerializeToString()
    tx_id = parse_proposal(signed).channel_header.tx_id
    return Msg(type=Msg.TRANSACTION, payload=payload, txid=tx_id, channel_id="mychannel", proposal=signed)


class PlayedPeer:
    """A Fabric peer's side of one chaincode stream, with an in-memory world state.

    Parameters
    ----------
    stub
        ``ChaincodeStub`` of a channel to the chaincode server.
    page_size
        Results per QueryResponse page (forces QUERY_STATE_NEXT when small).
    fail_get_state
        Keys whose GET_STATE the peer answers with ERROR.
    """

    def __init__(self, stub, page_size=100, fail_get_state=()):
        self.outgoing: asyncio.Queue = asyncio.Queue()
        self.call = stub.Connect(self._requests())
        self.state: dict[str, bytes] = {}
        self.history: dict[str, list] = {}
        self.page_size = page_size
        self.fail_get_state = set(fail_get_state)
        self.log: list[int] = []
        self._queries: dict[str, list] = {}

    async def _requests(self):
        while (msg := await self.outgoing.get()) is not None:
            yield msg

    async def handshake(self) -> Msg:
        register = await self.call.read()
        await self.outgoing.put(Msg(type=Msg.REGISTERED))
        await self.outgoing.put(Msg(type=Msg.READY))
        return register

    async def read(self) -> Msg:
        return await asyncio.wait_for(self.call.read(), timeout=10)

    async def close(self):
        await self.outgoing.put(None)
        self.call.cancel()

    def _page(self, query_id: str) -> bytes:
        rows = self._queries[query_id]
        page, self._queries[query_id] = rows[: self.page_size], rows[self.page_size :]
        results = [Shim.QueryResultBytes(resultBytes=r.SerializeToString()) for r in page]
        return Shim.QueryResponse(
            results=results, has_more=bool(self._queries[query_id]), id=query_id
        ).SerializeToString()

    def _query(self, rows: list) -> bytes:
        query_id = f"q{len(self._queries)}"
        self._queries[query_id] = rows
        return self._page(query_id)

    def reply(self, msg: Msg, writes: dict) -> Msg:
        """The peer's answer to one chaincode request (writes are buffered in ``writes``)."""
        answer = Msg(type=Msg.RESPONSE, txid=msg.txid, channel_id=msg.channel_id)
        if msg.type == Msg.GET_STATE:
            key = Shim.GetState.FromString(msg.payload).key
            if key in self.fail_get_state:
                answer.type, answer.payload = Msg.ERROR, b"ledger unavailable"
            else:
                answer.payload = self.state.get(key, b"")  # committed state only
        elif msg.type == Msg.PUT_STATE:
            put = Shim.PutState.FromString(msg.payload)
            writes[put.key] = put.value
        elif msg.type == Msg.DEL_STATE:
            writes[Shim.DelState.FromString(msg.payload).key] = None
        elif msg.type == Msg.GET_STATE_BY_RANGE:
            req = Shim.GetStateByRange.FromString(msg.payload)
            keys = [k for k in sorted(self.state) if req.startKey <= k and (not req.endKey or k < req.endKey)]
            answer.payload = self._query([kv_pb.KV(namespace="hyperfed", key=k, value=self.state[k]) for k in keys])
        elif msg.type == Msg.QUERY_STATE_NEXT:
            answer.payload = self._page(Shim.QueryStateNext.FromString(msg.payload).id)
        elif msg.type == Msg.QUERY_STATE_CLOSE:
            query_id = Shim.QueryStateClose.FromString(msg.payload).id
            self._queries.pop(query_id, None)
            answer.payload = Shim.QueryResponse(id=query_id).SerializeToString()
        elif msg.type == Msg.GET_HISTORY_FOR_KEY:
            key = Shim.GetHistoryForKey.FromString(msg.payload).key
            answer.payload = self._query(self.history.get(key, []))
        else:
            answer.type, answer.payload = Msg.ERROR, b"unsupported"
        return answer

    async def invoke(self, identity, *args: str, payload: bytes | None = None):
        """Run one transaction to COMPLETED/ERROR; commit its writes if it succeeded.

        Returns the final message and the writes the chaincode asked for.
        """
        tx = transaction(identity, *args, payload=payload)
        await self.outgoing.put(tx)
        writes: dict = {}
        while (msg := await self.read()).type not in (Msg.COMPLETED, Msg.ERROR):
            assert msg.txid == tx.txid
            self.log.append(msg.type)
            await self.outgoing.put(self.reply(msg, writes))
        if msg.type == Msg.COMPLETED and response_of(msg).status == 200:
            for key, value in writes.items():
                self.state[key] = value
                self.history.setdefault(key, []).insert(
                    0, kv_pb.KeyModification(tx_id=tx.txid, value=value or b"", is_delete=value is None)
                )
        return msg, writes


@pytest.fixture(scope="module")
def writer():
    return new_identity(new_ca("org1.example.com"), "Org1MSP")


@pytest.fixture(scope="module")
def other_org():
    return new_identity(new_ca("org2.example.com"), "Org2MSP")


async def _with_peer(chaincode, body, **peer_options):
    server = ChaincodeServer(chaincode, ccid=CCID, address="127.0.0.1:0")
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            peer = PlayedPeer(chaincode_shim_pb2_grpc.ChaincodeStub(channel), **peer_options)
            register = await peer.handshake()
            try:
                return await body(peer, register)
            finally:
                await peer.close()
    finally:
        await server.stop(grace=0)


def run(body, chaincode=None, **peer_options):
    return asyncio.run(_with_peer(chaincode or build_chaincode(), body, **peer_options))


def response_of(msg: Msg) -> proposal_response_pb2.Response:
    assert msg.type == Msg.COMPLETED, Msg.Type.Name(msg.type)
    return proposal_response_pb2.Response.FromString(msg.payload)


def test_register_then_transactions_read_and_write_through_the_peer(writer):
    async def body(peer, register):
        assert register.type == Msg.REGISTER
        assert chaincode_pb2.ChaincodeID.FromString(register.payload).name == CCID

        done, writes = await peer.invoke(writer, "init_ledger", "Org1MSP")
        assert response_of(done).status == 200
        assert peer.log == [Msg.GET_STATE, Msg.PUT_STATE]
        assert json.loads(writes["config"])["writer_msp"] == "Org1MSP"

        done, writes = await peer.invoke(writer, "register_client", "alice", DIGEST)
        result = json.loads(response_of(done).payload)
        assert result["replayed"] is False and result["record"]["commitment"] == DIGEST
        assert list(writes) == ["client/alice"]
        # The record's time is the proposal's timestamp, carried over the wire.
        assert result["record"]["registered_at"].startswith("20")
        return peer.state

    assert set(run(body)) == {"config", "client/alice"}


def test_contract_refusal_is_completed_with_status_500_and_writes_nothing(writer, other_org):
    async def body(peer, _):
        done, writes = await peer.invoke(writer, "register_client", "alice", DIGEST)
        response = response_of(done)
        assert response.status == 500 and "[not-configured]" in response.message
        assert writes == {} and peer.state == {}

        await peer.invoke(writer, "init_ledger", "Org1MSP")
        done, writes = await peer.invoke(other_org, "register_client", "alice", DIGEST)
        response = response_of(done)
        assert response.status == 500 and "[not-writer]" in response.message
        assert "Org2MSP" in response.message and writes == {}

    run(body)


def test_peer_error_reply_aborts_the_transaction_instead_of_becoming_data(writer):
    async def body(peer, _):
        done, writes = await peer.invoke(writer, "init_ledger", "Org1MSP")
        response = response_of(done)
        assert response.status == 500 and "ledger unavailable" in response.message
        assert Msg.PUT_STATE not in peer.log and writes == {}

    run(body, fail_get_state={"config"})


def test_undecodable_transaction_is_answered_with_error(writer):
    async def body(peer, _):
        done, _ = await peer.invoke(writer, "get_config", payload=b"\xff\xff not a ChaincodeInput")
        assert done.type == Msg.ERROR and done.payload

    run(body)


def test_range_scan_pages_through_query_state_next_and_history(writer):
    async def body(peer, _):
        await peer.invoke(writer, "init_ledger", "Org1MSP")
        for name in ("carol", "alice", "bob"):
            done, _ = await peer.invoke(writer, "register_client", name, DIGEST)
            assert response_of(done).status == 200
        peer.log.clear()
        done, _ = await peer.invoke(writer, "list_clients")
        listed = json.loads(response_of(done).payload)
        assert [c["client_id"] for c in listed] == ["alice", "bob", "carol"]
        assert Msg.QUERY_STATE_NEXT in peer.log and Msg.QUERY_STATE_CLOSE in peer.log

        done, _ = await peer.invoke(writer, "get_client_history", "bob")
        history = json.loads(response_of(done).payload)
        assert [c["tx_id"] for c in history["changes"]] == [peer.history["client/bob"][0].tx_id]
        assert Msg.GET_HISTORY_FOR_KEY in peer.log

    run(body, page_size=2)


def test_concurrent_transactions_on_one_stream_get_their_own_replies(writer):
    async def body(peer, _):
        await peer.invoke(writer, "init_ledger", "Org1MSP")
        # Two TRANSACTIONs in flight: replies are matched by txid, not by order.
        unknown = transaction(writer, "get_client", "nobody")
        config = transaction(writer, "get_config")
        await peer.outgoing.put(unknown)
        await peer.outgoing.put(config)
        finished = {}
        while len(finished) < 2:
            msg = await peer.read()
            if msg.type in (Msg.COMPLETED, Msg.ERROR):
                finished[msg.txid] = response_of(msg)
            else:
                await peer.outgoing.put(peer.reply(msg, {}))
        assert json.loads(finished[config.txid].payload)["writer_msp"] == "Org1MSP"
        assert finished[unknown.txid].status == 500

    run(body)


class _EventContract(Contract):
    Name = "events"

    async def emit(self, ctx: TransactionContextInterface, name: str) -> str:
        ctx.get_stub().set_event(name, b"payload")
        return "ok"


def test_set_event_reaches_the_peer_on_completed(writer):
    async def body(peer, _):
        done, _ = await peer.invoke(writer, "emit", "recorded")
        assert response_of(done).status == 200
        assert done.chaincode_event.event_name == "recorded"
        assert done.chaincode_event.payload == b"payload"

    run(body, chaincode=ContractChaincode.new_chaincode(_EventContract()))


def test_keepalive_is_echoed_and_unexpected_messages_get_error():
    async def body(peer, _):
        await peer.outgoing.put(Msg(type=Msg.KEEPALIVE, txid="k"))
        assert (await peer.read()).type == Msg.KEEPALIVE
        await peer.outgoing.put(Msg(type=Msg.PUT_STATE, txid="bogus", channel_id="mychannel"))
        error = await peer.read()
        assert error.type == Msg.ERROR and b"cannot handle" in error.payload

    run(body)


def test_server_refuses_to_start_without_a_package_id():
    with pytest.raises(ValueError, match="CHAINCODE_ID"):
        ChaincodeServer(build_chaincode(), ccid="", address="127.0.0.1:0")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_entry_point_serves_from_the_environment_without_hyperfed(writer):
    """``python -m chaincode.ccaas`` as the container runs it: env config, no hyperfed/torch."""
    port = _free_port()
    env = dict(
        os.environ, CHAINCODE_SERVER_ADDRESS=f"127.0.0.1:{port}", CHAINCODE_ID=CCID, CHAINCODE_LOG_LEVEL="WARNING"
    )
    blocker = (
        "import sys, runpy; sys.modules['hyperfed'] = None; sys.modules['torch'] = None; "
        "runpy.run_module('chaincode.ccaas', run_name='__main__')"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", blocker], env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )

    async def session():
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
            peer = PlayedPeer(chaincode_shim_pb2_grpc.ChaincodeStub(channel))
            register = await peer.handshake()
            assert chaincode_pb2.ChaincodeID.FromString(register.payload).name == CCID
            done, _ = await peer.invoke(writer, "get_config")
            await peer.close()
            return response_of(done)

    try:
        response = asyncio.run(session())
        assert response.status == 500 and "[not-configured]" in response.message
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output


def test_entry_point_explains_missing_configuration():
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINCODE_")}
    done = subprocess.run(
        [sys.executable, "-m", "chaincode.ccaas"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "CHAINCODE_SERVER_ADDRESS" in done.stderr and "CHAINCODE_ID" in done.stderr
