"""``GatewayBackend``: the HyperFed ledger interface over the Fabric Gateway gRPC API.

A submit is four steps, as in the official SDKs::

    propose (sign)  →  Endorse  →  sign the returned envelope  →  Submit  →  CommitStatus

Retry rules (the point is that a record is never committed twice):

* ``Endorse``, ``Evaluate`` and ``CommitStatus`` write nothing, so they are retried on
  ``UNAVAILABLE``/``DEADLINE_EXCEEDED`` with the *same* signed request.
* ``Submit`` is never retried as a new transaction. If its outcome is unknown (the call
  failed after the envelope may have left), the client asks ``CommitStatus`` for the same
  transaction id and, if that is not conclusive, re-sends the *same signed envelope*:
  Fabric invalidates a second copy as ``DUPLICATE_TXID``, so it can commit at most once.
  If the network stays away the call raises :class:`TransactionOutcomeUnknownError`
  carrying the id, to be resolved later with :meth:`GatewayBackend.commit_status`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.peer import transaction_pb2

from hyperfed.errors import LedgerError, LedgerUnavailableError
from hyperfed.ledger.base import LedgerBackend

from .config import GatewayConfig, GatewayTimeouts, TlsConfig
from .errors import (
    UNAVAILABLE_CODES,
    TransactionOutcomeUnknownError,
    error_for_validation_code,
    map_rpc_error,
)
from .identity import SigningIdentity, load_identity
from .proposal import (
    ProposedTransaction,
    build_proposal,
    result_from_envelope,
    sign_envelope,
    signed_commit_status_request,
    transaction_name,
)

__all__ = ["GatewayBackend", "PreparedTransaction", "CommitStatus", "gateway_backend_from_url"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_VALID = transaction_pb2.TxValidationCode.VALID
# Fabric's default maximum message size (100 MiB) in both directions.
_MAX_MESSAGE = 100 * 1024 * 1024


@dataclass(frozen=True)
class PreparedTransaction:
    """An endorsed transaction, signed and ready to be submitted.

    Attributes
    ----------
    transaction_id
        Its Fabric transaction id.
    envelope
        The signed ``common.Envelope`` sent to ``Submit``.
    result
        The chaincode's return value from endorsement (what ``submit`` returns).
    """

    transaction_id: str
    envelope: common_pb2.Envelope
    result: bytes


@dataclass(frozen=True)
class CommitStatus:
    """Outcome of a transaction on the ledger.

    Attributes
    ----------
    transaction_id
        The transaction asked about.
    code
        ``TxValidationCode`` value (0 = ``VALID``).
    block_number
        Block holding the transaction.
    """

    transaction_id: str
    code: int
    block_number: int

    @property
    def successful(self) -> bool:
        """True when the transaction is valid (its writes are in the world state)."""
        return self.code == _VALID

    @property
    def code_name(self) -> str:
        """Name of :attr:`code`, e.g. ``MVCC_READ_CONFLICT``."""
        return transaction_pb2.TxValidationCode.Name(self.code)


def _open_channel(endpoint: str, tls: TlsConfig | None) -> grpc.Channel:
    options = [
        ("grpc.max_send_message_length", _MAX_MESSAGE),
        ("grpc.max_receive_message_length", _MAX_MESSAGE),
    ]
    if tls is None:
        return grpc.insecure_channel(endpoint, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.root_cert,
        private_key=tls.client_key,
        certificate_chain=tls.client_cert,
    )
    return grpc.secure_channel(endpoint, credentials, options=options)


class GatewayBackend(LedgerBackend):
    """Ledger backend talking to a Fabric peer's Gateway service (Fabric ≥ 2.4).

    Parameters
    ----------
    endpoint
        ``host:port`` of the gateway peer.
    channel, chaincode
        Channel and chaincode name the contract is deployed as.
    identity
        The signing identity of the submitter (see :func:`load_identity`).
    tls
        TLS settings; None means plaintext.
    contract
        Contract name inside the chaincode when it is not the default contract.
    timeouts
        Per-call deadlines.
    max_attempts
        Attempts for calls that are safe to repeat (>= 1).
    backoff
        First pause between attempts in seconds; doubles each time, at most 2 s.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        channel: str,
        chaincode: str,
        identity: SigningIdentity,
        tls: TlsConfig | None = None,
        contract: str | None = None,
        timeouts: GatewayTimeouts | None = None,
        max_attempts: int = 3,
        backoff: float = 0.1,
    ) -> None:
        if max_attempts < 1:
            raise LedgerError(f"max_attempts must be >= 1, got {max_attempts}")
        self.endpoint = endpoint
        self.channel = channel
        self.chaincode = chaincode
        self.contract = contract
        self.identity = identity
        self.timeouts = timeouts or GatewayTimeouts()
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._tls_cert_hash = tls.client_cert_hash if tls else b""
        self._channel: grpc.Channel | None = _open_channel(endpoint, tls)
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: GatewayConfig) -> GatewayBackend:
        """Open a backend from a :class:`GatewayConfig` (reads identity and TLS files)."""
        return cls(
            config.endpoint,
            channel=config.channel,
            chaincode=config.chaincode,
            identity=load_identity(config.msp_id, config.cert, config.key),
            tls=config.tls(),
            contract=config.contract,
            timeouts=config.timeouts,
            max_attempts=config.max_attempts,
        )

    @classmethod
    def from_url(cls, url: str) -> GatewayBackend:
        """Open a backend from a ``fabric+gateway://`` URL (see :meth:`GatewayConfig.from_url`)."""
        return cls.from_config(GatewayConfig.from_url(url))

    # ------------------------------------------------------------------ LedgerBackend
    def submit(self, function: str, *args: str) -> bytes:
        """Endorse, order and commit ``function(*args)``; return its result once committed.

        Raises
        ------
        ContractViolationError
            The contract refused the transaction (nothing written).
        LedgerConflictError
            MVCC read conflict or endorsement mismatch (nothing written; retry).
        TransactionOutcomeUnknownError
            The gateway vanished after the transaction was sent; resolve by id.
        LedgerUnavailableError
            The gateway could not be reached before anything was sent.
        """
        return self.commit(self.prepare(function, *args))

    def evaluate(self, function: str, *args: str) -> bytes:
        """Run ``function(*args)`` as a query on one peer; nothing is ordered."""
        proposed = self._propose(function, args)
        request = gateway_pb2.EvaluateRequest(
            transaction_id=proposed.transaction_id,
            channel_id=self.channel,
            proposed_transaction=proposed.signed_proposal,
        )
        response = self._call_with_retry(
            "Evaluate",
            proposed.transaction_id,
            lambda: self._stub.Evaluate(request, timeout=self.timeouts.evaluate),
        )
        return bytes(response.result.payload)

    def close(self) -> None:
        """Close the gRPC channel. Safe to call twice."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # ------------------------------------------------------------------ finer steps
    def prepare(self, function: str, *args: str) -> PreparedTransaction:
        """Propose and endorse ``function(*args)``, then sign the transaction envelope.

        Nothing is on the ledger yet; :meth:`commit` submits it. Endorsing two
        transactions before committing either is how an MVCC conflict arises.
        """
        proposed = self._propose(function, args)
        request = gateway_pb2.EndorseRequest(
            transaction_id=proposed.transaction_id,
            channel_id=self.channel,
            proposed_transaction=proposed.signed_proposal,
        )
        response = self._call_with_retry(
            "Endorse",
            proposed.transaction_id,
            lambda: self._stub.Endorse(request, timeout=self.timeouts.endorse),
        )
        envelope = response.prepared_transaction
        try:
            result = result_from_envelope(envelope)
        except Exception as exc:
            raise LedgerError(f"gateway returned a malformed transaction for {proposed.transaction_id}: {exc}") from exc
        return PreparedTransaction(proposed.transaction_id, sign_envelope(self.identity, envelope), result)

    def commit(self, prepared: PreparedTransaction) -> bytes:
        """Submit a prepared transaction and wait for its commit; return its result."""
        tx_id = prepared.transaction_id
        request = gateway_pb2.SubmitRequest(
            transaction_id=tx_id, channel_id=self.channel, prepared_transaction=prepared.envelope
        )
        for attempt in range(self.max_attempts):
            try:
                self._rpc("Submit", tx_id, lambda: self._stub.Submit(request, timeout=self.timeouts.submit))
                break
            except LedgerUnavailableError as exc:
                # The envelope may have reached the orderer: ask before re-sending it.
                logger.warning("Submit of %s: outcome unknown (%s); checking its status", tx_id, exc)
                status = self._probe_status(tx_id)
                if status is not None:
                    return self._finish(status, prepared)
                if attempt + 1 < self.max_attempts:
                    self._sleep(attempt)
        else:
            raise TransactionOutcomeUnknownError(
                f"transaction {tx_id} may have been sent but the gateway stayed unreachable;"
                " resolve it with commit_status(transaction_id) before recording it again",
                tx_id,
            )
        try:
            status = self.commit_status(tx_id)
        except LedgerUnavailableError as exc:
            raise TransactionOutcomeUnknownError(
                f"transaction {tx_id} was accepted for ordering but its commit could not be"
                f" confirmed ({exc}); resolve it with commit_status(transaction_id)",
                tx_id,
            ) from exc
        return self._finish(status, prepared)

    def commit_status(self, transaction_id: str, *, timeout: float | None = None) -> CommitStatus:
        """Wait for ``transaction_id`` to be committed and return its validation code.

        Raises
        ------
        LedgerUnavailableError
            If the gateway is unreachable or the transaction is not committed in time.
        """
        request = signed_commit_status_request(self.identity, channel=self.channel, tx_id=transaction_id)
        deadline = timeout if timeout is not None else self.timeouts.commit_status
        response = self._call_with_retry(
            "CommitStatus",
            transaction_id,
            lambda: self._stub.CommitStatus(request, timeout=deadline),
            retry_codes=frozenset({grpc.StatusCode.UNAVAILABLE}),
        )
        return CommitStatus(transaction_id, int(response.result), int(response.block_number))

    # ------------------------------------------------------------------ internals
    def _propose(self, function: str, args: tuple[str, ...]) -> ProposedTransaction:
        name = transaction_name(function, self.contract)
        encoded = [name.encode()] + [a.encode() if isinstance(a, str) else bytes(a) for a in args]
        return build_proposal(
            self.identity,
            channel=self.channel,
            chaincode=self.chaincode,
            args=encoded,
            tls_cert_hash=self._tls_cert_hash,
        )

    def _finish(self, status: CommitStatus, prepared: PreparedTransaction) -> bytes:
        if not status.successful:
            raise error_for_validation_code(status.code, status.transaction_id)
        logger.debug("transaction %s committed in block %d", status.transaction_id, status.block_number)
        return prepared.result

    def _probe_status(self, tx_id: str) -> CommitStatus | None:
        """One short CommitStatus call; None when it cannot tell (yet)."""
        request = signed_commit_status_request(self.identity, channel=self.channel, tx_id=tx_id)
        probe = min(self.timeouts.commit_status, self.timeouts.submit)
        try:
            response = self._rpc("CommitStatus", tx_id, lambda: self._stub.CommitStatus(request, timeout=probe))
        except LedgerUnavailableError:
            return None
        return CommitStatus(tx_id, int(response.result), int(response.block_number))

    def _rpc(self, operation: str, tx_id: str, call: Callable[[], _T]) -> _T:
        if self._channel is None:
            raise LedgerError(f"{operation}: the gateway backend is closed")
        try:
            return call()
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, operation=operation, tx_id=tx_id) from exc

    def _call_with_retry(
        self,
        operation: str,
        tx_id: str,
        call: Callable[[], _T],
        retry_codes: frozenset[grpc.StatusCode] = UNAVAILABLE_CODES,
    ) -> _T:
        """Repeat a call that commits nothing while it fails with one of ``retry_codes``."""
        if self._channel is None:
            raise LedgerError(f"{operation}: the gateway backend is closed")
        for attempt in range(self.max_attempts):
            try:
                return call()
            except grpc.RpcError as exc:
                error = map_rpc_error(exc, operation=operation, tx_id=tx_id)
                if exc.code() not in retry_codes or attempt + 1 == self.max_attempts:
                    raise error from exc
                logger.warning("%s attempt %d/%d failed: %s", operation, attempt + 1, self.max_attempts, error)
                self._sleep(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep(self, attempt: int) -> None:
        time.sleep(min(self.backoff * 2**attempt, 2.0))

    def __repr__(self) -> str:
        return (
            f"GatewayBackend(endpoint={self.endpoint!r}, channel={self.channel!r},"
            f" chaincode={self.chaincode!r}, msp_id={self.identity.msp_id!r})"
        )


def gateway_backend_from_url(url: str) -> GatewayBackend:
    """Open a :class:`GatewayBackend` from ``fabric+gateway://host:port?channel=...``.

    This is the hook ``hyperfed.ledger.open_ledger`` calls for the ``fabric+gateway``
    scheme.
    """
    return GatewayBackend.from_url(url)
