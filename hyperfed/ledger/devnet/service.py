"""The gRPC face of the local gateway: Fabric 2.5's gateway codes, messages and details.

Each method delegates the peer work (checks, simulation, ordering) to
:class:`~hyperfed.ledger.devnet.server.LocalGatewayServer` and shapes failures the
way a real gateway does, so the client's error mapping is exercised for real:

=================  ==============================================================
Endorse            refused proposal or chaincode error → ``ABORTED`` "failed to
                   endorse transaction" + ``ErrorDetail`` ("chaincode response 500, …")
Evaluate           chaincode error → ``UNKNOWN`` "evaluate call to endorser returned
                   error: chaincode response 500, …"; refused proposal →
                   ``FAILED_PRECONDITION``
Submit             unsigned → ``INVALID_ARGUMENT``; bad envelope signature →
                   ``ABORTED`` (orderer ``FORBIDDEN``)
CommitStatus       bad request signature → ``PERMISSION_DENIED``; waits for the
                   transaction's block, ``DEADLINE_EXCEEDED`` if it never comes
=================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import grpc
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.peer import proposal_response_pb2

from hyperfed.errors import ContractViolationError, LedgerConflictError
from hyperfed.ledger.devnet.endorsement import ValidationFailure
from hyperfed.ledger.gateway.rpc_status import encode_status

if TYPE_CHECKING:
    from hyperfed.ledger.devnet.server import LocalGatewayServer

__all__ = ["GatewayService"]

_ENDORSE_FAILED = "failed to endorse transaction, see attached details for more info"


class GatewayService(gateway_pb2_grpc.GatewayServicer):
    """gRPC face of :class:`LocalGatewayServer`, with Fabric's error conventions."""

    def __init__(self, server: LocalGatewayServer) -> None:
        self.peer = server

    @staticmethod
    def _abort(
        context: grpc.ServicerContext,
        code: grpc.StatusCode,
        message: str,
        details: Sequence[gateway_pb2.ErrorDetail] = (),
    ) -> NoReturn:
        context.abort_with_status(encode_status(code, message, list(details)))
        raise AssertionError("abort_with_status returned")  # pragma: no cover

    def _fault(self, context: grpc.ServicerContext, name: str, message: str) -> None:
        if self.peer.faults.take(name):
            self._abort(context, grpc.StatusCode.UNAVAILABLE, f"{message} (injected fault)")

    def _endorse_on_peer(self, request: Any, context: grpc.ServicerContext) -> tuple[Any, Any]:
        """Check the signed proposal (and TLS binding), then simulate it on the ledger."""
        certs = context.auth_context().get("x509_pem_cert")
        parsed, msp = self.peer.check_proposal(request.proposed_transaction, certs[0] if certs else None)
        return parsed, self.peer.simulate(parsed, msp)

    @staticmethod
    def _failure(exc: Exception) -> str:
        """What a Fabric endorser reports for a refused proposal."""
        if isinstance(exc, ValidationFailure):
            return f"error validating proposal: {exc.message}"
        if isinstance(exc, ContractViolationError):
            return f"chaincode response 500, {exc}"
        return f"duplicate transaction found: {exc}"  # the ledger already holds this tx id

    def Endorse(self, request, context):  # noqa: N802 - gRPC method name
        self._fault(context, "unavailable_endorse", "endorser unavailable")
        try:
            parsed, simulation = self._endorse_on_peer(request, context)
            self.peer.refuse_query(simulation)  # a query is evaluated, never ordered into a block
        except (ValidationFailure, ContractViolationError, LedgerConflictError) as exc:
            detail = self.peer.error_detail(self._failure(exc))
            self._abort(context, grpc.StatusCode.ABORTED, _ENDORSE_FAILED, [detail])
        envelope = self.peer.endorse(parsed, simulation)
        return gateway_pb2.EndorseResponse(prepared_transaction=envelope)

    def Evaluate(self, request, context):  # noqa: N802
        self._fault(context, "unavailable_evaluate", "endorser unavailable")
        try:
            _, simulation = self._endorse_on_peer(request, context)
        except (ValidationFailure, ContractViolationError, LedgerConflictError) as exc:
            message = self._failure(exc)
            # A chaincode error is UNKNOWN; a proposal the endorser refused, FAILED_PRECONDITION.
            code = (
                grpc.StatusCode.UNKNOWN
                if isinstance(exc, ContractViolationError)
                else grpc.StatusCode.FAILED_PRECONDITION
            )
            self._abort(
                context, code, f"evaluate call to endorser returned error: {message}", [self.peer.error_detail(message)]
            )
        self.peer.stats.evaluations += 1
        result = proposal_response_pb2.Response(status=200, payload=bytes(simulation.payload))
        return gateway_pb2.EvaluateResponse(result=result)

    def Submit(self, request, context):  # noqa: N802
        envelope = request.prepared_transaction
        if not envelope.signature:
            self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, "prepared transaction must be signed")
        self._fault(context, "unavailable_submit", "no orderers could successfully process transaction")
        try:
            self.peer.order(envelope)
        except ValidationFailure as exc:
            message = f"received unsuccessful response from orderer: status=FORBIDDEN, info={exc.message}"
            self._abort(context, grpc.StatusCode.ABORTED, message, [self.peer.error_detail(message)])
        self._fault(context, "lose_submit_reply", "connection reset, reply lost")
        return gateway_pb2.SubmitResponse()

    def CommitStatus(self, request, context):  # noqa: N802
        self._fault(context, "unavailable_commit_status", "gateway unavailable")
        try:
            inner = gateway_pb2.CommitStatusRequest.FromString(request.request)
        except Exception as exc:  # protobuf DecodeError
            self._abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"invalid status request: {exc}")
        if not inner.identity or not inner.channel_id or not inner.transaction_id:
            self._abort(
                context, grpc.StatusCode.INVALID_ARGUMENT, "identity, channel ID and transaction ID are required"
            )
        try:
            self.peer.check_signature(inner.identity, request.request, request.signature, "commit status request")
        except ValidationFailure as exc:
            self._abort(context, grpc.StatusCode.PERMISSION_DENIED, exc.message)
        if inner.channel_id != self.peer.channel:
            self._abort(context, grpc.StatusCode.NOT_FOUND, f"channel [{inner.channel_id}] not found")
        remaining = context.time_remaining()
        wait = None if remaining is None else max(remaining - 0.05, 0.0)
        outcome = self.peer.wait_for_outcome(inner.transaction_id, wait)
        if outcome is None:
            self._abort(
                context,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "context deadline exceeded waiting for the transaction's block",
            )
        return gateway_pb2.CommitStatusResponse(result=outcome.code, block_number=outcome.block)

    def ChaincodeEvents(self, request, context):  # noqa: N802
        # HyperFed relies on no events (fabric-chaincode-python 2.5.4 never delivers them).
        self._abort(context, grpc.StatusCode.UNIMPLEMENTED, "chaincode events are not served by the local gateway")
