"""Map Fabric gateway failures (gRPC status codes, details, validation codes) to typed errors.

What the Fabric gateway returns (Fabric 2.4/2.5 ``internal/pkg/gateway``):

* ``Endorse`` — a chaincode error becomes ``ABORTED`` "failed to endorse transaction"
  with an ``ErrorDetail`` ``"chaincode response 500, <message>"`` per peer; a proposal
  the endorser refuses (bad signature, unknown creator, wrong tx id) becomes ``ABORTED``
  with the endorser's "access denied"/validation message as detail.
* ``Evaluate`` — a chaincode error is ``UNKNOWN`` "evaluate call to endorser returned
  error: chaincode response 500, <message>".
* ``Submit`` — ``UNAVAILABLE`` when no orderer took it, ``ABORTED`` when an orderer
  rejected it (e.g. ``FORBIDDEN`` for a bad envelope signature).
* ``CommitStatus`` — ``PERMISSION_DENIED`` for a bad request signature; otherwise the
  transaction's validation code (``VALID``, ``MVCC_READ_CONFLICT``, ...).
"""

from __future__ import annotations

import re

import grpc
from fabric_protos.peer import transaction_pb2

from hyperfed.errors import (
    ContractViolationError,
    LedgerConflictError,
    LedgerError,
    LedgerUnavailableError,
)

from .rpc_status import error_details

__all__ = [
    "LedgerAccessDeniedError",
    "TransactionOutcomeUnknownError",
    "TransactionInvalidError",
    "map_rpc_error",
    "error_for_validation_code",
    "UNAVAILABLE_CODES",
]

#: Codes meaning "the request may not have reached a working peer": safe to retry for
#: calls that commit nothing (Endorse, Evaluate, CommitStatus).
UNAVAILABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

_CHAINCODE_RESPONSE = re.compile(r"chaincode response (\d+), (.*)", re.DOTALL)
# What a peer reports when the chaincode answered ERROR instead of COMPLETED.
_CHAINCODE_FAILURE = re.compile(r"transaction returned with failure: (.*)", re.DOTALL)
_ACCESS_HINTS = (
    "access denied",
    "signature",
    "creator",
    "invalid txid",
    "forbidden",
    "not authorized",
)
_CONFLICT_CODES = {
    transaction_pb2.TxValidationCode.MVCC_READ_CONFLICT,
    transaction_pb2.TxValidationCode.PHANTOM_READ_CONFLICT,
    transaction_pb2.TxValidationCode.DUPLICATE_TXID,
}


class LedgerAccessDeniedError(LedgerError):
    """The network refused the request's identity, signature or transaction id.

    Retrying will not help: check the MSP id, certificate, key and the TLS settings.
    """


class TransactionOutcomeUnknownError(LedgerUnavailableError):
    """A submitted transaction may or may not have been committed.

    The connection failed after the signed transaction left this process. Do **not**
    submit the record again as a new transaction; resolve it with
    ``GatewayBackend.commit_status(error.transaction_id)`` once the network is back.
    """

    def __init__(self, message: str, transaction_id: str) -> None:
        super().__init__(message)
        self.transaction_id = transaction_id


class TransactionInvalidError(LedgerError):
    """The transaction was ordered but the committing peer marked it invalid."""

    def __init__(self, message: str, validation_code: int) -> None:
        super().__init__(message)
        self.validation_code = validation_code


def _messages(error: grpc.RpcError) -> list[str]:
    details = [d.message for d in error_details(error)]
    return details + [error.details() or ""]


def _chaincode_message(messages: list[str]) -> str | None:
    """The chaincode's own error message, if the failure carries one."""
    for message in messages:
        match = _CHAINCODE_RESPONSE.search(message)
        if match:
            return match.group(2)
    for message in messages:
        match = _CHAINCODE_FAILURE.search(message)
        if match:
            return match.group(1)
    return None


def map_rpc_error(error: grpc.RpcError, *, operation: str, tx_id: str = "") -> LedgerError:
    """Translate a failed gateway call into the library's typed ledger error.

    Parameters
    ----------
    error
        The ``grpc.RpcError`` raised by the stub.
    operation
        ``"Endorse"``, ``"Submit"``, ``"CommitStatus"`` or ``"Evaluate"`` (for messages).
    tx_id
        Transaction id, quoted in the message so logs can be matched to the ledger.
    """
    code = error.code()
    messages = _messages(error)
    where = f"{operation} of transaction {tx_id}" if tx_id else operation
    summary = "; ".join(m for m in messages if m) or code.name
    if code in UNAVAILABLE_CODES:
        return LedgerUnavailableError(f"{where}: gateway unreachable ({code.name}): {summary}")
    chaincode = _chaincode_message(messages)
    if chaincode is not None:
        # The contract's own words, exactly as the embedded ledger reports them.
        return ContractViolationError(chaincode)
    lowered = summary.lower()
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED) or any(
        hint in lowered for hint in _ACCESS_HINTS
    ):
        return LedgerAccessDeniedError(f"{where}: request refused ({code.name}): {summary}")
    if code == grpc.StatusCode.ABORTED:
        # No chaincode verdict and no access problem: endorsements disagreed or the
        # orderer turned the transaction away. Nothing was written; a fresh attempt may pass.
        return LedgerConflictError(f"{where}: aborted: {summary}")
    return LedgerError(f"{where}: failed ({code.name}): {summary}")


def error_for_validation_code(code: int, tx_id: str) -> LedgerError:
    """The error for a committed-but-invalid transaction's validation code."""
    codes = transaction_pb2.TxValidationCode
    name = codes.Name(code) if code in codes.values() else str(code)
    message = f"transaction {tx_id} was not committed: validation code {name}"
    if code in _CONFLICT_CODES:
        return LedgerConflictError(message + " - nothing was written; retry the operation")
    return TransactionInvalidError(message, code)
