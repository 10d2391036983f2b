"""The peer side of a Fabric transaction: check what clients sign, endorse, validate.

Used by the local gateway endpoint. The checks mirror what a Fabric endorser
(``core/common/validation``), orderer (signature filter) and committer (VSCC) do, so the
client is tested against the same rules a real network applies:

* the creator decodes to a certificate issued by a CA of its MSP and still valid;
* the signature over the proposal / envelope / commit-status request is a valid low-S
  ECDSA-SHA256 signature by that certificate's key;
* ``tx_id == hex(sha256(nonce || creator))``;
* channel, header type and chaincode name match;
* the endorsement inside a submitted envelope is this peer's, over exactly the response
  it produced.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from fabric_protos.common import common_pb2
from fabric_protos.ledger.rwset import rwset_pb2
from fabric_protos.ledger.rwset.kvrwset import kv_rwset_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2, proposal_response_pb2, transaction_pb2

from hyperfed.ledger.gateway.identity import (
    SigningIdentity,
    certificate_from_creator,
    is_low_s,
    transaction_id,
    verify_signature,
)
from hyperfed.ledger.gateway.proposal import ParsedProposal

_Code = transaction_pb2.TxValidationCode

__all__ = [
    "ValidationFailure",
    "Verifier",
    "Endorser",
    "EndorsedTransaction",
    "SubmittedTransaction",
    "parse_envelope",
    "rwset_bytes",
]


class ValidationFailure(Exception):
    """A request failed a peer-side check.

    Attributes
    ----------
    message
        Fabric-style reason, e.g. ``"access denied: ..."``.
    code
        ``TxValidationCode`` a committer would record for it.
    """

    def __init__(self, message: str, code: int = _Code.INVALID_OTHER_REASON) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Verifier:
    """Checks identities and signatures against the MSPs a channel trusts.

    Parameters
    ----------
    msp_roots
        MSP id → PEM root certificates. An identity must be directly issued by one of its
        MSP's roots. ``None`` accepts any well-formed certificate (signatures are still
        checked against it) — only for throw-away endpoints.
    """

    def __init__(self, msp_roots: Mapping[str, Sequence[bytes]] | None = None) -> None:
        self._roots: dict[str, list[x509.Certificate]] | None = None
        if msp_roots is not None:
            self._roots = {
                msp: [x509.load_pem_x509_certificate(pem) for pem in pems] for msp, pems in msp_roots.items()
            }

    def identity(self, creator: bytes) -> tuple[str, x509.Certificate]:
        """Decode and authenticate a serialised identity; return ``(msp_id, cert)``."""
        try:
            msp_id, cert = certificate_from_creator(creator)
        except ValueError as exc:
            raise ValidationFailure(
                f"access denied: creator is malformed: {exc}",
                _Code.BAD_CREATOR_SIGNATURE,
            ) from exc
        now = dt.datetime.now(dt.timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ValidationFailure(
                f"access denied: creator certificate of org [{msp_id}] is expired or not yet valid",
                _Code.BAD_CREATOR_SIGNATURE,
            )
        if self._roots is not None:
            roots = self._roots.get(msp_id)
            if not roots:
                raise ValidationFailure(
                    f"access denied: creator org unknown, MSP [{msp_id}] is not a member of the channel",
                    _Code.BAD_CREATOR_SIGNATURE,
                )
            if not any(_issued_by(cert, root) for root in roots):
                raise ValidationFailure(
                    f"access denied: creator certificate is not issued by a CA of MSP [{msp_id}]",
                    _Code.BAD_CREATOR_SIGNATURE,
                )
        return msp_id, cert

    def signature(self, creator: bytes, message: bytes, signature: bytes, what: str) -> str:
        """Authenticate ``creator``, check its low-S signature over ``message``; return MSP id."""
        msp_id, cert = self.identity(creator)
        try:
            low_s = is_low_s(signature)
        except ValueError:
            low_s = True  # not DER at all: reported as an invalid signature below
        if not low_s:
            raise ValidationFailure(
                f"access denied: the creator's signature over the {what} is not low-S"
                f" (org [{msp_id}]); Fabric rejects s > n/2",
                _Code.BAD_CREATOR_SIGNATURE,
            )
        if not verify_signature(cert.public_key(), message, signature):  # type: ignore[arg-type]
            raise ValidationFailure(
                f"access denied: the creator's signature over the {what} is not valid (org [{msp_id}])",
                _Code.BAD_CREATOR_SIGNATURE,
            )
        return msp_id

    def proposal(
        self,
        parsed: ParsedProposal,
        signature: bytes,
        proposal_bytes: bytes,
        *,
        channel: str,
        chaincode: str,
    ) -> str:
        """All endorser checks on a signed proposal; return the creator's MSP id."""
        header = parsed.channel_header
        if header.type != common_pb2.HeaderType.ENDORSER_TRANSACTION:
            raise ValidationFailure(f"invalid header type {header.type}, expected ENDORSER_TRANSACTION")
        if header.channel_id != channel:
            raise ValidationFailure(f"channel [{header.channel_id}] not found (this peer serves [{channel}])")
        if not header.HasField("timestamp"):
            raise ValidationFailure("proposal has no timestamp")
        if parsed.chaincode != chaincode:
            raise ValidationFailure(
                f"make sure the chaincode {parsed.chaincode} has been successfully defined on"
                f" channel {channel} and try again: chaincode {parsed.chaincode} not found"
            )
        sig_header = parsed.signature_header
        if not sig_header.nonce or not sig_header.creator:
            raise ValidationFailure("invalid signature header: nonce and creator are required")
        msp_id = self.signature(sig_header.creator, proposal_bytes, signature, "proposal")
        check_tx_id(header.tx_id, sig_header.nonce, sig_header.creator)
        return msp_id


def _issued_by(cert: x509.Certificate, root: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def check_tx_id(tx_id: str, nonce: bytes, creator: bytes) -> None:
    """Raise unless ``tx_id`` is Fabric's derivation from nonce and creator."""
    expected = transaction_id(nonce, creator)
    if tx_id != expected:
        raise ValidationFailure(
            f"invalid txid. got [{tx_id}], expected [{expected}]",
            _Code.BAD_PROPOSAL_TXID,
        )


def rwset_bytes(namespace: str, reads: Any, writes: Any) -> bytes:
    """Serialise a simulation's reads and writes as Fabric's ``TxReadWriteSet``.

    Accepts mappings ``key → version`` / ``key → value-or-None`` or sequences of pairs.
    A version is an int (block number), a ``(block, tx)`` pair, or anything else (kept as
    block 0: the committer in this endpoint re-checks versions itself).
    """
    kv = kv_rwset_pb2.KVRWSet()
    for key, version in _pairs(reads):
        read = kv.reads.add(key=str(key))
        if isinstance(version, int):
            read.version.block_num = version
        elif isinstance(version, (tuple, list)) and [type(v) for v in version] == [int, int]:
            read.version.block_num, read.version.tx_num = version
    for key, value in _pairs(writes):
        if value is None:
            kv.writes.add(key=str(key), is_delete=True)
        else:
            data = value if isinstance(value, bytes) else str(value).encode()
            kv.writes.add(key=str(key), value=data)
    tx = rwset_pb2.TxReadWriteSet(data_model=rwset_pb2.TxReadWriteSet.KV)
    tx.ns_rwset.add(namespace=namespace, rwset=kv.SerializeToString())
    return tx.SerializeToString()


def _pairs(items: Any) -> Iterable[tuple[Any, Any]]:
    if items is None:
        return []
    if isinstance(items, Mapping):
        return list(items.items())
    out = []
    for item in items:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            out.append((item[0], item[1]))
        elif hasattr(item, "key"):
            out.append((item.key, getattr(item, "value", getattr(item, "version", None))))
        else:
            out.append((item, None))
    return out


@dataclass(frozen=True)
class EndorsedTransaction:
    """What an endorsement produced: the unsigned envelope and the signed response bytes."""

    envelope: common_pb2.Envelope
    response_payload: bytes


class Endorser:
    """Signs proposal responses as one peer and assembles the transaction envelope.

    Parameters
    ----------
    identity
        The peer's signing identity.
    chaincode, version
        Chaincode id recorded in the chaincode action.
    """

    def __init__(self, identity: SigningIdentity, chaincode: str, version: str = "1.0") -> None:
        self.identity = identity
        self.chaincode_id = chaincode_pb2.ChaincodeID(name=chaincode, version=version)

    def endorse(self, parsed: ParsedProposal, result: bytes, results: bytes) -> EndorsedTransaction:
        """Endorse a successful simulation and build the envelope like the gateway does."""
        action = proposal_pb2.ChaincodeAction(
            results=results,
            response=proposal_response_pb2.Response(status=200, payload=result),
            chaincode_id=self.chaincode_id,
        )
        prp = proposal_response_pb2.ProposalResponsePayload(
            proposal_hash=parsed.proposal_hash, extension=action.SerializeToString()
        ).SerializeToString()
        endorser = self.identity.creator
        endorsement = proposal_response_pb2.Endorsement(endorser=endorser, signature=self.identity.sign(prp + endorser))
        visible = proposal_pb2.ChaincodeProposalPayload(input=parsed.payload.input).SerializeToString()
        action_payload = transaction_pb2.ChaincodeActionPayload(
            chaincode_proposal_payload=visible,
            action=transaction_pb2.ChaincodeEndorsedAction(proposal_response_payload=prp, endorsements=[endorsement]),
        )
        tx = transaction_pb2.Transaction(
            actions=[
                transaction_pb2.TransactionAction(
                    header=parsed.header.signature_header,
                    payload=action_payload.SerializeToString(),
                )
            ]
        )
        payload = common_pb2.Payload(header=parsed.header, data=tx.SerializeToString())
        return EndorsedTransaction(common_pb2.Envelope(payload=payload.SerializeToString()), prp)

    def check_endorsement(self, submitted: SubmittedTransaction) -> None:
        """Raise unless the envelope carries this peer's valid endorsement of its response."""
        endorser = self.identity.creator
        for endorsement in submitted.endorsements:
            if endorsement.endorser == endorser and verify_signature(
                self.identity.private_key.public_key(),
                submitted.response_payload + endorser,
                endorsement.signature,
            ):
                return
        raise ValidationFailure(
            "endorsement policy failure: no valid endorsement of the proposal response",
            _Code.ENDORSEMENT_POLICY_FAILURE,
        )


@dataclass(frozen=True)
class SubmittedTransaction:
    """The fields of a submitted envelope that orderer and committer check."""

    channel_header: common_pb2.ChannelHeader
    signature_header: common_pb2.SignatureHeader
    response_payload: bytes
    endorsements: list[proposal_response_pb2.Endorsement]


def parse_envelope(envelope: common_pb2.Envelope) -> SubmittedTransaction:
    """Decode a transaction envelope down to its endorsed action.

    Raises
    ------
    ValidationFailure
        With ``BAD_PAYLOAD`` if any layer does not decode.
    """
    try:
        payload = common_pb2.Payload.FromString(envelope.payload)
        channel_header = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
        signature_header = common_pb2.SignatureHeader.FromString(payload.header.signature_header)
        tx = transaction_pb2.Transaction.FromString(payload.data)
        action = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload).action
    except Exception as exc:  # DecodeError / IndexError: a malformed envelope
        raise ValidationFailure(f"bad transaction payload: {exc}", _Code.BAD_PAYLOAD) from exc
    return SubmittedTransaction(
        channel_header,
        signature_header,
        bytes(action.proposal_response_payload),
        list(action.endorsements),
    )
