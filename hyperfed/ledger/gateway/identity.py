"""Client identity for the Fabric Gateway: X.509 certificate + EC P-256 key, signing, tx ids.

Fabric authenticates every request by an ECDSA signature over SHA-256 of the serialised
message, made with the private key matching the certificate in the request's
``SerializedIdentity`` (``mspid`` + PEM certificate). Peers and orderers reject
signatures whose ``s`` lies in the upper half of the curve order (Fabric's BCCSP
``IsLowS`` check), so every signature made here is normalised to low-S, exactly as the
official Go/Node/Java gateway SDKs do.

Transaction ids are not free-form: ``tx_id = hex(sha256(nonce || creator))`` where
``creator`` is the serialised identity. Endorsers recompute it and refuse a proposal
whose id does not match (``BAD_PROPOSAL_TXID``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from fabric_protos.msp import identities_pb2

from hyperfed.errors import ConfigError

__all__ = [
    "NONCE_BYTES",
    "SigningIdentity",
    "load_identity",
    "serialize_identity",
    "transaction_id",
    "new_nonce",
    "sign_low_s",
    "is_low_s",
    "verify_signature",
    "certificate_from_creator",
]

#: Nonce length used by the official gateway SDKs.
NONCE_BYTES = 24

# Order n of the P-256 group; a valid low-S signature has s <= n // 2.
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HALF_ORDER = _P256_ORDER >> 1


def new_nonce() -> bytes:
    """Return a fresh random nonce for a transaction's signature header."""
    return os.urandom(NONCE_BYTES)


def transaction_id(nonce: bytes, creator: bytes) -> str:
    """Fabric's transaction id: lower-case hex of ``sha256(nonce || creator)``.

    Parameters
    ----------
    nonce
        The random nonce placed in the signature header.
    creator
        The serialised ``msp.SerializedIdentity`` of the submitter.
    """
    return hashlib.sha256(nonce + creator).hexdigest()


def serialize_identity(msp_id: str, certificate_pem: bytes) -> bytes:
    """Serialise ``(msp_id, PEM certificate)`` as Fabric's ``msp.SerializedIdentity``."""
    return identities_pb2.SerializedIdentity(mspid=msp_id, id_bytes=certificate_pem).SerializeToString()


def is_low_s(signature_der: bytes) -> bool:
    """True if the DER ECDSA signature's ``s`` is in the lower half of the P-256 order."""
    _, s = decode_dss_signature(signature_der)
    return s <= _HALF_ORDER


def sign_low_s(private_key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """ECDSA-sign ``sha256(message)`` and return a DER signature normalised to low-S.

    ``(r, s)`` and ``(r, n - s)`` are both valid signatures; Fabric only accepts the one
    with ``s <= n/2`` so a signature cannot be malleated into a second valid form.
    """
    der = private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    if s > _HALF_ORDER:
        s = _P256_ORDER - s
    return encode_dss_signature(r, s)


def verify_signature(public_key: ec.EllipticCurvePublicKey, message: bytes, signature_der: bytes) -> bool:
    """Verify a Fabric signature: valid ECDSA/SHA-256 over ``message`` *and* low-S.

    Returns ``False`` (never raises) for malformed, high-S or wrong signatures.
    """
    try:
        if not is_low_s(signature_der):
            return False
        public_key.verify(signature_der, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def certificate_from_creator(creator: bytes) -> tuple[str, x509.Certificate]:
    """Decode a serialised identity into ``(msp_id, certificate)``.

    Raises
    ------
    ValueError
        If the bytes are not a ``SerializedIdentity`` holding a PEM certificate.
    """
    identity = identities_pb2.SerializedIdentity.FromString(creator)
    if not identity.mspid or not identity.id_bytes:
        raise ValueError("creator is malformed: missing mspid or certificate")
    return identity.mspid, x509.load_pem_x509_certificate(identity.id_bytes)


@dataclass(frozen=True)
class SigningIdentity:
    """An enrolled Fabric identity that can sign requests.

    Parameters
    ----------
    msp_id
        Membership service provider id of the identity's organisation, e.g. ``Org1MSP``.
    certificate_pem
        The enrolment certificate (PEM), as found in ``msp/signcerts``.
    private_key
        The matching EC P-256 private key, as found in ``msp/keystore``.
    """

    msp_id: str
    certificate_pem: bytes
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not self.msp_id:
            raise ConfigError("msp_id must be a non-empty MSP id such as 'Org1MSP', got ''")
        if not isinstance(self.private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            self.private_key.curve, ec.SECP256R1
        ):
            curve = getattr(self.private_key, "curve", None)
            kind = curve.name if curve is not None else type(self.private_key).__name__
            raise ConfigError(f"private key must be an EC P-256 key, got {kind}")
        try:
            cert = x509.load_pem_x509_certificate(self.certificate_pem)
        except ValueError as exc:
            raise ConfigError(f"certificate is not a PEM X.509 certificate: {exc}") from exc
        cert_public = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_public = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if cert_public != key_public:
            raise ConfigError(
                f"private key does not match the certificate of {cert.subject.rfc4514_string()}"
                " - check that cert and key come from the same msp/ directory"
            )

    @property
    def creator(self) -> bytes:
        """Serialised ``SerializedIdentity`` placed in every signature header."""
        return serialize_identity(self.msp_id, self.certificate_pem)

    def sign(self, message: bytes) -> bytes:
        """Low-S ECDSA/SHA-256 DER signature over ``message``."""
        return sign_low_s(self.private_key, message)


def _single_file(path: Path, what: str) -> Path:
    """``path`` itself, or the only regular file inside directory ``path``."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if len(files) != 1:
            raise ConfigError(
                f"{what} directory {path} must hold exactly one file, found {len(files)}:"
                f" {[p.name for p in files]} - pass the file path instead"
            )
        return files[0]
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    return path


def load_identity(
    msp_id: str,
    cert: str | os.PathLike[str],
    key: str | os.PathLike[str],
    *,
    key_password: bytes | None = None,
) -> SigningIdentity:
    """Load a signing identity from PEM files (or an ``msp/`` directory layout).

    Parameters
    ----------
    msp_id
        The organisation's MSP id, e.g. ``Org1MSP``.
    cert
        PEM certificate file, or a directory holding exactly one (``msp/signcerts``).
    key
        PEM private key file (PKCS#8 or SEC1), or a directory holding exactly one
        (``msp/keystore``, where cryptogen writes ``priv_sk``).
    key_password
        Password of an encrypted key file, if any.

    Raises
    ------
    ConfigError
        If a file is missing, unreadable, not P-256, or the key does not match the cert.
    """
    cert_path = _single_file(Path(cert), "certificate")
    key_path = _single_file(Path(key), "private key")
    try:
        private_key = serialization.load_pem_private_key(key_path.read_bytes(), password=key_password)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot load private key {key_path}: {exc}") from exc
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"private key {key_path} is not an EC key ({type(private_key).__name__})")
    return SigningIdentity(msp_id, cert_path.read_bytes(), private_key)
