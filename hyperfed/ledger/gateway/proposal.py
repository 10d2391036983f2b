"""Build and parse Fabric transaction proposals exactly as the official gateway SDKs do.

Message nesting (every ``bytes`` field holds a serialised message)::

    SignedProposal{proposal_bytes, signature = sign(proposal_bytes)}
      Proposal{header, payload}
        Header{channel_header, signature_header}
          ChannelHeader{type=ENDORSER_TRANSACTION, timestamp, channel_id, tx_id, epoch=0,
                        extension=ChaincodeHeaderExtension{chaincode_id{name}},
                        tls_cert_hash (mutual TLS only)}
          SignatureHeader{creator=SerializedIdentity, nonce}
        ChaincodeProposalPayload{input=ChaincodeInvocationSpec{
            chaincode_spec{type=NODE, chaincode_id{name}, input{args=[fn, *args]}}}}

After endorsement the gateway returns an unsigned ``common.Envelope`` whose payload the
client signs before ``Submit``; ``CommitStatus`` takes a signed ``CommitStatusRequest``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2
from google.protobuf import timestamp_pb2

from .identity import SigningIdentity, new_nonce, transaction_id

__all__ = [
    "ProposedTransaction",
    "ParsedProposal",
    "build_proposal",
    "parse_proposal",
    "sign_envelope",
    "signed_commit_status_request",
    "transaction_name",
    "result_from_envelope",
]


def transaction_name(function: str, contract: str | None = None) -> str:
    """The first chaincode argument: ``function`` or ``contract:function``."""
    return f"{contract}:{function}" if contract else function


@dataclass(frozen=True)
class ProposedTransaction:
    """A signed proposal ready for ``Endorse`` or ``Evaluate``.

    Attributes
    ----------
    transaction_id
        ``hex(sha256(nonce || creator))``.
    signed_proposal
        The ``protos.SignedProposal`` sent to the gateway.
    """

    transaction_id: str
    signed_proposal: proposal_pb2.SignedProposal


def _timestamp(now: float | None) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    seconds = time.time() if now is None else now
    ts.seconds = int(seconds)
    ts.nanos = int(round((seconds - int(seconds)) * 1e9)) % 1_000_000_000
    return ts


def build_proposal(
    identity: SigningIdentity,
    *,
    channel: str,
    chaincode: str,
    args: list[bytes],
    tls_cert_hash: bytes = b"",
    nonce: bytes | None = None,
    now: float | None = None,
) -> ProposedTransaction:
    """Build and sign a chaincode proposal.

    Parameters
    ----------
    identity
        The submitter; its serialised form becomes the proposal's creator.
    channel, chaincode
        Target channel and chaincode name (``-ccn`` of ``deployCCAAS``).
    args
        ``[transaction name, *arguments]`` as bytes.
    tls_cert_hash
        SHA-256 of the client's TLS certificate (DER) when mutual TLS is used, else empty.
    nonce, now
        Fixed nonce / time for reproducible tests; fresh random nonce and wall clock if
        omitted.
    """
    nonce = new_nonce() if nonce is None else nonce
    creator = identity.creator
    tx_id = transaction_id(nonce, creator)
    chaincode_id = chaincode_pb2.ChaincodeID(name=chaincode)
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.HeaderType.ENDORSER_TRANSACTION,
        timestamp=_timestamp(now),
        channel_id=channel,
        tx_id=tx_id,
        epoch=0,
        extension=proposal_pb2.ChaincodeHeaderExtension(chaincode_id=chaincode_id).SerializeToString(),
        tls_cert_hash=tls_cert_hash,
    )
    signature_header = common_pb2.SignatureHeader(creator=creator, nonce=nonce)
    header = common_pb2.Header(
        channel_header=channel_header.SerializeToString(),
        signature_header=signature_header.SerializeToString(),
    )
    invocation = chaincode_pb2.ChaincodeInvocationSpec(
        chaincode_spec=chaincode_pb2.ChaincodeSpec(
            type=chaincode_pb2.ChaincodeSpec.NODE,
            chaincode_id=chaincode_id,
            input=chaincode_pb2.ChaincodeInput(args=args),
        )
    )
    payload = proposal_pb2.ChaincodeProposalPayload(input=invocation.SerializeToString())
    proposal_bytes = proposal_pb2.Proposal(
        header=header.SerializeToString(), payload=payload.SerializeToString()
    ).SerializeToString()
    signed = proposal_pb2.SignedProposal(proposal_bytes=proposal_bytes, signature=identity.sign(proposal_bytes))
    return ProposedTransaction(tx_id, signed)


@dataclass(frozen=True)
class ParsedProposal:
    """The fields of a signed proposal that an endorser checks and uses."""

    header: common_pb2.Header
    channel_header: common_pb2.ChannelHeader
    signature_header: common_pb2.SignatureHeader
    payload: proposal_pb2.ChaincodeProposalPayload
    chaincode: str
    args: list[bytes]
    proposal_hash: bytes

    @property
    def timestamp(self) -> float:
        """Proposal timestamp in seconds since the epoch."""
        ts = self.channel_header.timestamp
        return ts.seconds + ts.nanos / 1e9


def parse_proposal(signed: proposal_pb2.SignedProposal) -> ParsedProposal:
    """Decode every layer of a signed proposal (no signature checks).

    Raises
    ------
    ValueError
        If a layer is missing or does not parse; the message names the layer.
    """
    if not signed.proposal_bytes:
        raise ValueError("a signed proposal is required")
    try:
        proposal = proposal_pb2.Proposal.FromString(signed.proposal_bytes)
        header = common_pb2.Header.FromString(proposal.header)
        channel_header = common_pb2.ChannelHeader.FromString(header.channel_header)
        signature_header = common_pb2.SignatureHeader.FromString(header.signature_header)
        payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
        spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input)
    except Exception as exc:  # protobuf raises DecodeError (a bare Exception subclass)
        raise ValueError(f"cannot decode proposal: {exc}") from exc
    chaincode = spec.chaincode_spec.chaincode_id.name
    if not chaincode:
        raise ValueError(f"no chaincode name is provided, channel id [{channel_header.channel_id}]")
    # Fabric's proposal hash covers the header and the payload without the transient map.
    visible = proposal_pb2.ChaincodeProposalPayload(input=payload.input).SerializeToString()
    proposal_hash = hashlib.sha256(proposal.header + visible).digest()
    return ParsedProposal(
        header=header,
        channel_header=channel_header,
        signature_header=signature_header,
        payload=payload,
        chaincode=chaincode,
        args=list(spec.chaincode_spec.input.args),
        proposal_hash=proposal_hash,
    )


def sign_envelope(identity: SigningIdentity, envelope: common_pb2.Envelope) -> common_pb2.Envelope:
    """Return a copy of the gateway's prepared envelope signed by ``identity``."""
    return common_pb2.Envelope(payload=envelope.payload, signature=identity.sign(envelope.payload))


def signed_commit_status_request(
    identity: SigningIdentity, *, channel: str, tx_id: str
) -> gateway_pb2.SignedCommitStatusRequest:
    """A ``CommitStatus`` request for ``tx_id`` signed by ``identity``."""
    request = gateway_pb2.CommitStatusRequest(
        transaction_id=tx_id, channel_id=channel, identity=identity.creator
    ).SerializeToString()
    return gateway_pb2.SignedCommitStatusRequest(request=request, signature=identity.sign(request))


def result_from_envelope(envelope: common_pb2.Envelope) -> bytes:
    """The chaincode's return value carried inside a prepared transaction envelope.

    Path: Payload.data → Transaction.actions[0].payload → ChaincodeActionPayload.action
    .proposal_response_payload → ProposalResponsePayload.extension → ChaincodeAction
    .response.payload (what the official SDKs return from ``submit``).
    """
    payload = common_pb2.Payload.FromString(envelope.payload)
    tx = transaction_pb2.Transaction.FromString(payload.data)
    if not tx.actions:
        raise ValueError("prepared transaction has no actions")
    action_payload = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
    prp = proposal_response_pb2.ProposalResponsePayload.FromString(action_payload.action.proposal_response_payload)
    action = proposal_pb2.ChaincodeAction.FromString(prp.extension)
    return bytes(action.response.payload)
