"""Chaincode-as-a-service entry point: serve the HyperFed contract to Fabric peers over gRPC.

With CCaaS the chaincode is a gRPC *server*; each peer dials it (address from the
package's ``connection.json``) and opens the ``protos.Chaincode/Connect`` bidi stream::

    chaincode → REGISTER(ChaincodeID{name=CHAINCODE_ID})
    peer      → REGISTERED, READY
    peer      → TRANSACTION(txid, ChaincodeInput, SignedProposal)
    chaincode → GET_STATE / PUT_STATE / DEL_STATE / GET_STATE_BY_RANGE /
                QUERY_STATE_NEXT / QUERY_STATE_CLOSE / GET_HISTORY_FOR_KEY
    peer      → RESPONSE (or ERROR) to each, matched by (channel, txid)
    chaincode → COMPLETED(Response{status, message, payload}, chaincode_event)

This module replaces fabric-chaincode-python 2.5.4's handler and server (DESIGN §6) while
reusing its contract dispatcher (``ContractChaincode``) and ``ChaincodeStub``:

* a peer ``ERROR`` reply raises :class:`PeerError` inside the contract instead of being
  handed to it as the value of the key (the contract then refuses the transaction);
* the event set with ``stub.set_event`` is sent on ``COMPLETED`` (2.5.4 drops it);
* the server runs under ``asyncio.run`` (2.5.4 uses the deprecated ``get_event_loop``);
* logging is left as the host configured it (see :mod:`chaincode.fabric_compat`).

A contract refusal is answered as the Go and Node contract APIs do: ``COMPLETED`` with a
``Response`` of status 500 and the refusal as message — the peer reports it as
``chaincode response 500, <message>``. ``ERROR`` is sent when a transaction cannot run
at all (undecodable input, an exception escaping the dispatcher).

Run: ``CHAINCODE_SERVER_ADDRESS=0.0.0.0:9999 CHAINCODE_ID=<package id> python -m chaincode.ccaas``.
Optional TLS, as in fabric-samples: ``CHAINCODE_TLS_DISABLED=false``, ``CHAINCODE_TLS_KEY``,
``CHAINCODE_TLS_CERT`` and (to verify peers) ``CHAINCODE_CLIENT_CA_CERT`` (file paths).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub
from fabric_protos.peer import chaincode_pb2, chaincode_shim_pb2, chaincode_shim_pb2_grpc, proposal_response_pb2

from chaincode.fabric_compat import ContractChaincode  # first: tames the shim's logging

__all__ = ["PeerError", "CcaasTls", "ChaincodeServer", "build_chaincode", "serve", "main"]

logger = logging.getLogger(__name__)

Msg = chaincode_shim_pb2.ChaincodeMessage


class PeerError(Exception):
    """The peer answered a state request with ``ERROR``; the message is the peer's reason."""


@dataclass(frozen=True)
class CcaasTls:
    """Server TLS: PEM key and certificate; ``client_ca`` makes peers present certificates."""

    key: bytes = field(repr=False)
    cert: bytes
    client_ca: bytes | None = None


def build_chaincode() -> ContractChaincode:
    """The HyperFed contract wrapped in fabric-chaincode-python's contract dispatcher."""
    from chaincode.contract import HyperFedContract

    return ContractChaincode.new_chaincode(HyperFedContract())


class _PeerSession:
    """One ``Connect`` stream: registration, then concurrent transactions.

    Implements the ``handle_*`` methods the shim's :class:`ChaincodeStub` calls, so the
    contract's ``await stub.get_state(...)`` becomes a ``GET_STATE`` on this stream.
    """

    def __init__(self, chaincode: Any, ccid: str, write: Any) -> None:
        self._chaincode = chaincode
        self._ccid = ccid
        self._write = write
        self._write_lock = asyncio.Lock()
        self._state = "created"
        self._waiting: dict[tuple[str, str], asyncio.Future[Msg]] = {}
        self._tx_locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, msg: Msg) -> None:
        async with self._write_lock:  # one writer at a time on a gRPC stream
            await self._write(msg)

    async def run(self, incoming: AsyncIterator[Msg]) -> None:
        chaincode_id = chaincode_pb2.ChaincodeID(name=self._ccid)
        register = Msg(type=Msg.REGISTER, payload=chaincode_id.SerializeToString())
        register.timestamp.FromDatetime(dt.datetime.now(dt.timezone.utc))
        await self.send(register)
        try:
            async for msg in incoming:
                await self._dispatch(msg)
        finally:
            for task in list(self._tasks):
                task.cancel()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(PeerError("the peer closed the chaincode stream"))
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _dispatch(self, msg: Msg) -> None:
        if msg.type == Msg.KEEPALIVE:
            await self.send(msg)  # the Go shim echoes keepalives
        elif self._state == "created" and msg.type == Msg.REGISTERED:
            self._state = "established"
        elif self._state == "established" and msg.type == Msg.READY:
            self._state = "ready"
            logger.info("chaincode %s registered with the peer and ready", self._ccid)
        elif self._state == "ready" and msg.type in (Msg.RESPONSE, Msg.ERROR):
            future = self._waiting.pop((msg.channel_id, msg.txid), None)
            if future is None or future.done():
                logger.warning("unexpected %s for transaction %s", Msg.Type.Name(msg.type), msg.txid)
            else:
                future.set_result(msg)
        elif self._state == "ready" and msg.type in (Msg.TRANSACTION, Msg.INIT):
            task = asyncio.create_task(self._transaction(msg))
            self._tasks.add(task)
            key = (msg.channel_id, msg.txid)
            task.add_done_callback(lambda done: self._finished(done, key))
        else:
            reason = (
                f"[{msg.txid}] chaincode cannot handle message"
                f" ({Msg.Type.Name(msg.type)}) while in state: {self._state}"
            )
            logger.error(reason)
            await self.send(Msg(type=Msg.ERROR, payload=reason.encode(), txid=msg.txid, channel_id=msg.channel_id))

    def _finished(self, task: asyncio.Task[None], key: tuple[str, str]) -> None:
        self._tasks.discard(task)
        self._tx_locks.pop(key, None)

    async def _transaction(self, msg: Msg) -> None:
        reply = Msg(txid=msg.txid, channel_id=msg.channel_id)
        try:
            cc_input = chaincode_pb2.ChaincodeInput.FromString(msg.payload)
            stub = ChaincodeStub(self, msg.channel_id, msg.txid, cc_input, msg.proposal)
            run = self._chaincode.init if msg.type == Msg.INIT else self._chaincode.invoke
            response = await run(stub)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the transaction could not run: tell the peer why
            logger.exception("transaction %s failed to run", msg.txid)
            reply.type, reply.payload = Msg.ERROR, f"{type(exc).__name__}: {exc}".encode()
            await self.send(reply)
            return
        if response is None or not response.status:
            response = proposal_response_pb2.Response(status=500, message="the chaincode returned no response")
        reply.type, reply.payload = Msg.COMPLETED, response.SerializeToString()
        events = stub.get_events()
        if events:  # Fabric keeps one event per transaction: the last one set
            reply.chaincode_event.CopyFrom(events[-1])
        await self.send(reply)

    # ------------------------------------------------- requests from the stub to the peer
    async def _ask(self, kind: int, request: Any, channel_id: str, tx_id: str) -> Msg:
        key = (channel_id, tx_id)
        async with self._tx_locks[key]:  # one outstanding request per transaction
            future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
            self._waiting[key] = future
            await self.send(Msg(type=kind, payload=request.SerializeToString(), txid=tx_id, channel_id=channel_id))
            reply = await future
        if reply.type == Msg.ERROR:
            reason = reply.payload.decode(errors="replace")
            raise PeerError(f"peer refused {Msg.Type.Name(kind)}: {reason}")
        return reply

    async def handle_get_state(self, collection: str, key: str, channel_id: str, tx_id: str) -> bytes:
        request = chaincode_shim_pb2.GetState(key=key, collection=collection)
        return (await self._ask(Msg.GET_STATE, request, channel_id, tx_id)).payload

    async def handle_put_state(self, collection: str, key: str, value: bytes, channel_id: str, tx_id: str) -> Msg:
        request = chaincode_shim_pb2.PutState(key=key, value=value, collection=collection)
        return await self._ask(Msg.PUT_STATE, request, channel_id, tx_id)

    async def handle_delete_state(self, collection: str, key: str, channel_id: str, tx_id: str) -> Msg:
        request = chaincode_shim_pb2.DelState(key=key, collection=collection)
        return await self._ask(Msg.DEL_STATE, request, channel_id, tx_id)

    async def handle_get_state_by_range(
        self,
        collection: str,
        start_key: str,
        end_key: str,
        channel_id: str,
        tx_id: str,
        metadata: bytes | None = None,
    ) -> Msg:
        request = chaincode_shim_pb2.GetStateByRange(
            startKey=start_key or "",
            endKey=end_key or "",
            collection=collection,
            metadata=metadata or b"",
        )
        return await self._ask(Msg.GET_STATE_BY_RANGE, request, channel_id, tx_id)

    async def handle_get_query_result(
        self,
        collection: str,
        query: str,
        channel_id: str,
        tx_id: str,
        metadata: bytes | None = None,
    ) -> Msg:
        request = chaincode_shim_pb2.GetQueryResult(query=query, collection=collection, metadata=metadata or b"")
        return await self._ask(Msg.GET_QUERY_RESULT, request, channel_id, tx_id)

    async def handle_get_history_for_key(self, key: str, channel_id: str, tx_id: str) -> Msg:
        request = chaincode_shim_pb2.GetHistoryForKey(key=key)
        return await self._ask(Msg.GET_HISTORY_FOR_KEY, request, channel_id, tx_id)

    async def handle_query_state_next(self, query_id: str, channel_id: str, tx_id: str) -> Msg:
        request = chaincode_shim_pb2.QueryStateNext(id=query_id)
        return await self._ask(Msg.QUERY_STATE_NEXT, request, channel_id, tx_id)

    async def handle_query_state_close(self, query_id: str, channel_id: str, tx_id: str) -> Msg:
        request = chaincode_shim_pb2.QueryStateClose(id=query_id)
        return await self._ask(Msg.QUERY_STATE_CLOSE, request, channel_id, tx_id)

    async def handle_invoke_chaincode(self, chaincode_name: str, args: list[Any], channel_id: str, tx_id: str) -> Msg:
        encoded = [a.encode() if isinstance(a, str) else a for a in args]
        spec = chaincode_pb2.ChaincodeSpec(
            chaincode_id=chaincode_pb2.ChaincodeID(name=chaincode_name),
            input=chaincode_pb2.ChaincodeInput(args=encoded),
        )
        return await self._ask(Msg.INVOKE_CHAINCODE, spec, channel_id, tx_id)


class _ChaincodeService(chaincode_shim_pb2_grpc.ChaincodeServicer):
    def __init__(self, chaincode: Any, ccid: str) -> None:
        self._chaincode = chaincode
        self._ccid = ccid

    async def Connect(  # noqa: N802 - gRPC method name
        self, request_iterator: AsyncIterator[Msg], context: grpc.aio.ServicerContext
    ) -> None:
        peer = context.peer()
        logger.info("peer %s connected", peer)
        await _PeerSession(self._chaincode, self._ccid, context.write).run(request_iterator)
        logger.info("peer %s disconnected", peer)


class ChaincodeServer:
    """The CCaaS gRPC server (``grpc.aio``) for one chaincode package.

    Parameters
    ----------
    chaincode
        A shim ``Chaincode`` (``init``/``invoke``); :func:`build_chaincode` by default.
    ccid
        The chaincode package id the peer installed (``CHAINCODE_ID``), sent in REGISTER.
    address
        Listen address, e.g. ``0.0.0.0:9999``; port 0 picks a free port.
    tls
        Serve TLS (``tls_required: true`` in connection.json); plaintext if None.
    """

    def __init__(
        self,
        chaincode: Any | None = None,
        *,
        ccid: str,
        address: str,
        tls: CcaasTls | None = None,
    ) -> None:
        if not ccid:
            raise ValueError("ccid must be the chaincode package id (CHAINCODE_ID), got ''")
        self._chaincode = chaincode if chaincode is not None else build_chaincode()
        self._ccid, self._address, self._tls = ccid, address, tls
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Bind and start serving; return the bound port."""
        server = grpc.aio.server()
        service = _ChaincodeService(self._chaincode, self._ccid)
        chaincode_shim_pb2_grpc.add_ChaincodeServicer_to_server(service, server)
        if self._tls is None:
            self.port = server.add_insecure_port(self._address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(self._tls.key, self._tls.cert)],
                root_certificates=self._tls.client_ca,
                require_client_auth=self._tls.client_ca is not None,
            )
            self.port = server.add_secure_port(self._address, credentials)
        await server.start()
        self._server = server
        logger.info("chaincode %s listening on %s (port %d)", self._ccid, self._address, self.port)
        return self.port

    async def stop(self, grace: float | None = 3.0) -> None:
        """Stop serving, letting running transactions finish for ``grace`` seconds."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait(self) -> None:
        """Block until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()


def _tls_from_env(env: dict[str, str]) -> CcaasTls | None:
    if env.get("CHAINCODE_TLS_DISABLED", "true").lower() != "false":
        return None
    try:
        key = Path(env["CHAINCODE_TLS_KEY"]).read_bytes()
        cert = Path(env["CHAINCODE_TLS_CERT"]).read_bytes()
    except KeyError as exc:
        raise ValueError(f"CHAINCODE_TLS_DISABLED=false needs {exc.args[0]} (a PEM file path)") from exc
    ca_path = env.get("CHAINCODE_CLIENT_CA_CERT")
    return CcaasTls(key, cert, Path(ca_path).read_bytes() if ca_path else None)


async def serve(env: dict[str, str] | None = None) -> None:
    """Serve until SIGINT/SIGTERM, configured from ``env`` (default ``os.environ``)."""
    env = dict(os.environ if env is None else env)
    address, ccid = env.get("CHAINCODE_SERVER_ADDRESS"), env.get("CHAINCODE_ID")
    if not address or not ccid:
        raise ValueError("set CHAINCODE_SERVER_ADDRESS (e.g. 0.0.0.0:9999) and CHAINCODE_ID (the package id)")
    server = ChaincodeServer(ccid=ccid, address=address, tls=_tls_from_env(env))
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / platform
            pass
    waiter = asyncio.create_task(server.wait())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([waiter, stopped], return_when=asyncio.FIRST_COMPLETED)
    await server.stop()
    waiter.cancel()


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``python -m chaincode.ccaas``); returns the exit status."""
    logging.basicConfig(
        level=os.environ.get("CHAINCODE_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(serve())
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
