"""A Fabric Gateway endpoint on loopback that verifies every signature and runs the contract.

It speaks the real ``gateway.Gateway`` gRPC service, so :class:`GatewayBackend` is tested
end to end without Docker: ``Endorse`` checks the signed proposal like a Fabric endorser
and simulates the HyperFed contract on an :class:`~hyperfed.ledger.embedded.ledger.EmbeddedLedger`;
``Submit`` checks the envelope signature (orderer) and this peer's endorsement (committer)
before committing; ``CommitStatus`` checks the request signature and returns the
transaction's validation code; ``Evaluate`` simulates without committing.

Error replies follow Fabric 2.5's gateway (codes, messages and ``ErrorDetail`` trailers).
:class:`FaultPlan` injects lost replies and outages so retry safety can be tested.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.peer import transaction_pb2

from chaincode.contract import EVALUATE_TRANSACTIONS
from hyperfed.errors import ContractViolationError, LedgerConflictError
from hyperfed.ledger.devnet.endorsement import (
    Endorser,
    ValidationFailure,
    Verifier,
    check_tx_id,
    parse_envelope,
    rwset_bytes,
)
from hyperfed.ledger.devnet.pki import new_ca, new_identity
from hyperfed.ledger.devnet.service import GatewayService
from hyperfed.ledger.gateway.client import GatewayBackend
from hyperfed.ledger.gateway.identity import SigningIdentity
from hyperfed.ledger.gateway.proposal import ParsedProposal, parse_proposal

__all__ = ["FaultPlan", "GatewayStats", "ServerTls", "LocalGatewayServer", "connect_local_gateway"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_Code = transaction_pb2.TxValidationCode
_MAX_PENDING = 10_000
_QUERIES = frozenset(EVALUATE_TRANSACTIONS)


@dataclass
class FaultPlan:
    """Failures to inject; each counter is consumed by the next matching call.

    Attributes
    ----------
    unavailable_endorse, unavailable_evaluate, unavailable_commit_status
        Fail the call with ``UNAVAILABLE`` before doing anything.
    unavailable_submit
        Fail ``Submit`` with ``UNAVAILABLE`` before the transaction is ordered.
    lose_submit_reply
        Order and commit the transaction, then answer ``UNAVAILABLE`` (the reply is lost:
        the client cannot know the outcome).
    """

    unavailable_endorse: int = 0
    unavailable_evaluate: int = 0
    unavailable_submit: int = 0
    lose_submit_reply: int = 0
    unavailable_commit_status: int = 0

    def take(self, name: str) -> bool:
        """Consume one fault of kind ``name``; True if it fires."""
        value = getattr(self, name)
        if value > 0:
            setattr(self, name, value - 1)
            return True
        return False


@dataclass
class GatewayStats:
    """Counters of what the endpoint did (for tests and benchmarks)."""

    endorsements: int = 0
    evaluations: int = 0
    submits: int = 0
    commits: int = 0
    invalid: int = 0
    duplicates: int = 0
    rejected_signatures: int = 0


@dataclass(frozen=True)
class ServerTls:
    """TLS of the endpoint: PEM certificate chain and key; ``client_ca`` enables mutual TLS."""

    cert_chain: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None


@dataclass
class _Outcome:
    code: int
    block: int


class LocalGatewayServer:
    """The Gateway service on loopback, backed by an embedded ledger.

    Parameters
    ----------
    ledger
        Path of the embedded ledger file, or a zero-argument factory returning an object
        with ``simulate(function, args, *, tx_id, creator_msp, timestamp)`` and
        ``commit(simulation)``. The ledger is created and used on one dedicated thread
        (SQLite connections are thread-bound; one thread also orders commits).
    channel, chaincode
        What the endpoint serves; proposals for anything else are refused.
    msp_roots
        MSP id → PEM CA certificates trusted for client identities (None: any
        certificate, signatures still checked).
    writer_msp
        Passed to :class:`EmbeddedLedger` when ``ledger`` is a path.
    peer_identity
        Identity that signs endorsements; a throw-away one if omitted.
    tls
        Serve TLS (and mutual TLS with ``client_ca``); plaintext if None.
    host, port
        Listen address; port 0 picks a free port (see :attr:`endpoint`).
    """

    def __init__(
        self,
        ledger: str | os.PathLike[str] | Callable[[], Any],
        *,
        channel: str = "hyperfed",
        chaincode: str = "hyperfed",
        msp_roots: Mapping[str, Sequence[bytes]] | None = None,
        writer_msp: str = "HyperFedMSP",
        peer_identity: SigningIdentity | None = None,
        tls: ServerTls | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if callable(ledger):
            self._ledger_factory = ledger
        else:
            path = os.fspath(ledger)

            def _open() -> Any:
                from hyperfed.ledger.embedded import EmbeddedLedger

                return EmbeddedLedger(path, writer_msp=writer_msp, msp_id=writer_msp)

            self._ledger_factory = _open
        self.channel = channel
        self.chaincode = chaincode
        self.faults = FaultPlan()
        self.stats = GatewayStats()
        self._verifier = Verifier(msp_roots)
        if peer_identity is None:
            peer_identity = new_identity(new_ca("peer.local"), writer_msp, name="peer0")
        self._endorser = Endorser(peer_identity, chaincode)
        self._peer_msp = peer_identity.msp_id
        self._tls = tls
        self._host, self._port = host, port
        self._ledger_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-gateway-ledger")
        self._ledger: Any = None
        self._lock = threading.Condition()
        self._pending: OrderedDict[str, tuple[Any, bytes]] = OrderedDict()
        self._outcomes: dict[str, _Outcome] = {}
        self._last_block = 0
        self._server: grpc.Server | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalGatewayServer:
        """Open the ledger and start serving; returns self."""
        self._ledger = self._on_ledger(self._ledger_factory)
        server = grpc.server(ThreadPoolExecutor(max_workers=8, thread_name_prefix="local-gateway"))
        gateway_pb2_grpc.add_GatewayServicer_to_server(GatewayService(self), server)
        address = f"{self._host}:{self._port}"
        if self._tls is None:
            self._port = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(self._tls.private_key, self._tls.cert_chain)],
                root_certificates=self._tls.client_ca,
                require_client_auth=self._tls.client_ca is not None,
            )
            self._port = server.add_secure_port(address, credentials)
        server.start()
        self._server = server
        logger.info("local Fabric gateway serving channel %s on %s", self.channel, self.endpoint)
        return self

    def stop(self) -> None:
        """Stop serving and close the ledger. Safe to call twice."""
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
        if self._ledger is not None:
            ledger, self._ledger = self._ledger, None
            if hasattr(ledger, "close"):
                self._on_ledger(ledger.close)
        self._ledger_thread.shutdown(wait=True)

    @property
    def endpoint(self) -> str:
        """``host:port`` to dial."""
        return f"{self._host}:{self._port}"

    def __enter__(self) -> LocalGatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_ledger(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        return self._ledger_thread.submit(fn, *args, **kwargs).result()

    # ------------------------------------------------------------------ peer roles
    def check_proposal(self, signed: Any, tls_client_cert: bytes | None = None) -> tuple[ParsedProposal, str]:
        """Parse and verify a signed proposal; return it and the creator's MSP id.

        ``tls_client_cert`` is the PEM certificate of a mutual-TLS client: a proposal that
        carries a TLS certificate hash must carry that certificate's.
        """
        try:
            parsed = parse_proposal(signed)
        except ValueError as exc:
            raise ValidationFailure(str(exc)) from exc
        bound = parsed.channel_header.tls_cert_hash
        if bound and tls_client_cert is not None:
            cert = x509.load_pem_x509_certificate(tls_client_cert)
            der = cert.public_bytes(serialization.Encoding.DER)
            if bound != hashlib.sha256(der).digest():
                self.stats.rejected_signatures += 1
                raise ValidationFailure(
                    "access denied: the TLS certificate hash in the channel header is not the client's TLS certificate"
                )
        try:
            msp = self._verifier.proposal(
                parsed,
                signed.signature,
                signed.proposal_bytes,
                channel=self.channel,
                chaincode=self.chaincode,
            )
        except ValidationFailure:
            self.stats.rejected_signatures += 1
            raise
        with self._lock:
            if parsed.channel_header.tx_id in self._outcomes:
                tx_id = parsed.channel_header.tx_id
                raise ValidationFailure(f"duplicate transaction found [{tx_id}]")
        return parsed, msp

    def simulate(self, parsed: ParsedProposal, msp: str) -> Any:
        """Run the proposal's function on the ledger without committing."""
        function, *args = [a.decode() for a in parsed.args] or [""]
        return self._on_ledger(
            self._ledger.simulate,
            function,
            list(args),
            tx_id=parsed.channel_header.tx_id,
            creator_msp=msp,
            timestamp=parsed.timestamp,
        )

    def refuse_query(self, simulation: Any) -> None:
        """Refuse to endorse a query (evaluate-only) function for submission.

        Raises
        ------
        ContractViolationError
            ``[evaluate-only]``: the function is in the contract's
            ``get_evaluate_transactions()``; nothing is endorsed or appended.
        """
        function = getattr(simulation, "function", "")
        if function in _QUERIES:
            raise ContractViolationError(
                f"[evaluate-only] {function} is a query: evaluate it instead of submitting; nothing was written"
            )

    def endorse(self, parsed: ParsedProposal, simulation: Any) -> Any:
        """Endorse a simulation and remember it until it is submitted."""
        results = rwset_bytes(self.chaincode, getattr(simulation, "reads", None), getattr(simulation, "writes", None))
        endorsed = self._endorser.endorse(parsed, bytes(simulation.payload), results)
        with self._lock:
            self._pending[parsed.channel_header.tx_id] = (simulation, endorsed.response_payload)
            while len(self._pending) > _MAX_PENDING:
                self._pending.popitem(last=False)
        self.stats.endorsements += 1
        return endorsed.envelope

    def check_signature(self, creator: bytes, message: bytes, signature: bytes, what: str) -> str:
        """Authenticate ``creator`` and its signature over ``message``; return its MSP id."""
        try:
            return self._verifier.signature(creator, message, signature, what)
        except ValidationFailure:
            self.stats.rejected_signatures += 1
            raise

    def order(self, envelope: Any) -> None:
        """Orderer signature filter, then validate and commit (synchronously)."""
        submitted = parse_envelope(envelope)
        creator = submitted.signature_header.creator
        self.check_signature(creator, envelope.payload, envelope.signature, "envelope")
        self.stats.submits += 1
        self._validate_and_commit(submitted)

    def _validate_and_commit(self, submitted: Any) -> None:
        tx_id = submitted.channel_header.tx_id
        with self._lock:
            if tx_id in self._outcomes:
                # A re-sent copy: Fabric marks the copy DUPLICATE_TXID and keeps the first.
                self.stats.duplicates += 1
                return
            pending = self._pending.pop(tx_id, None)
        try:
            check_tx_id(tx_id, submitted.signature_header.nonce, submitted.signature_header.creator)
            self._endorser.check_endorsement(submitted)
            if pending is None or pending[1] != submitted.response_payload:
                raise ValidationFailure("endorsed response unknown to this peer", _Code.ENDORSEMENT_POLICY_FAILURE)
            block = int(self._on_ledger(self._ledger.commit, pending[0]))
            outcome = _Outcome(_Code.VALID, block)
            self.stats.commits += 1
        except ValidationFailure as exc:
            outcome = _Outcome(exc.code, self._last_block)
        except LedgerConflictError as exc:
            logger.info("transaction %s invalidated: %s", tx_id, exc)
            outcome = _Outcome(_Code.MVCC_READ_CONFLICT, self._last_block)
        if outcome.code != _Code.VALID:
            self.stats.invalid += 1
        with self._lock:
            self._last_block = max(self._last_block, outcome.block)
            self._outcomes[tx_id] = outcome
            self._lock.notify_all()

    def wait_for_outcome(self, tx_id: str, timeout: float | None) -> _Outcome | None:
        """Block until ``tx_id`` has a validation code or ``timeout`` passes."""
        with self._lock:
            self._lock.wait_for(lambda: tx_id in self._outcomes, timeout=timeout)
            return self._outcomes.get(tx_id)

    def error_detail(self, message: str) -> gateway_pb2.ErrorDetail:
        """An ``ErrorDetail`` naming this peer."""
        return gateway_pb2.ErrorDetail(address=self.endpoint, msp_id=self._peer_msp, message=message)


class _LocalGatewayBackend(GatewayBackend):
    """A :class:`GatewayBackend` that also owns (and stops) its local endpoint."""

    server: LocalGatewayServer

    def close(self) -> None:
        super().close()
        self.server.stop()


def connect_local_gateway(
    ledger: str | os.PathLike[str] | Callable[[], Any],
    *,
    msp_id: str = "HyperFedMSP",
    channel: str = "hyperfed",
    chaincode: str = "hyperfed",
    **backend_options: Any,
) -> GatewayBackend:
    """Start a local gateway on an embedded ledger and return a backend connected to it.

    A throw-away CA for ``msp_id`` issues the client identity and is the only root the
    endpoint trusts, so every request is checked against a real certificate chain.
    Closing the backend stops the endpoint. The running server is ``backend.server``.

    Parameters
    ----------
    ledger
        Embedded ledger path (or factory, see :class:`LocalGatewayServer`).
    msp_id
        MSP of the client identity (and the contract's writer MSP).
    channel, chaincode
        Names served and used.
    **backend_options
        Extra keyword arguments of :class:`GatewayBackend` (timeouts, max_attempts, ...).
    """
    ca = new_ca(msp_id.lower())
    identity = new_identity(ca, msp_id)
    server = LocalGatewayServer(
        ledger,
        channel=channel,
        chaincode=chaincode,
        msp_roots={msp_id: [ca.cert_pem]},
        writer_msp=msp_id,
    ).start()
    try:
        backend = _LocalGatewayBackend(
            server.endpoint,
            channel=channel,
            chaincode=chaincode,
            identity=identity,
            **backend_options,
        )
    except Exception:
        server.stop()
        raise
    backend.server = server
    return backend
