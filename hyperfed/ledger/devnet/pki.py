"""Throw-away PKI for local gateways, tests and benchmarks (a tiny ``cryptogen``).

Fabric identities are X.509 certificates issued by an organisation's CA; TLS uses a second
CA. This module makes both on the fly with EC P-256 keys so the local gateway endpoint can
check real certificate chains and real TLS handshakes. Never use it for a real network:
keys live in memory and certificates are valid for one day.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hyperfed.ledger.gateway.identity import SigningIdentity
from hypernet.errors import ConfigError

__all__ = ["CertificateAuthority", "IssuedCertificate", "new_ca", "new_identity", "self_signed_identity"]

_VALIDITY = dt.timedelta(days=1)


def _name(common_name: str, org: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    @property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The key as a ``cryptography`` object."""
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):  # we only ever issue EC keys
            raise ConfigError(f"expected an EC private key, got {type(key).__name__}")
        return key


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed EC P-256 CA that issues leaf certificates."""

    org: str
    key: ec.EllipticCurvePrivateKey = field(repr=False)
    cert: x509.Certificate = field(repr=False)

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate in PEM (what goes in ``cacerts/`` or ``tls/ca.crt``)."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        *,
        server_names: tuple[str, ...] = (),
        client: bool = True,
    ) -> IssuedCertificate:
        """Issue a leaf certificate with a fresh P-256 key.

        Parameters
        ----------
        common_name
            Subject CN, e.g. ``User1@org1.example.com``.
        server_names
            DNS names / IP addresses for a TLS server certificate (SAN + serverAuth).
        client
            Add the clientAuth extended key usage (identities, mutual-TLS clients).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, self.org))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=bool(server_names),
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        )
        usages = []
        if server_names:
            sans: list[x509.GeneralName] = []
            for name in server_names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    sans.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return IssuedCertificate(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _self_signed_builder(
    key: ec.EllipticCurvePrivateKey, name: x509.Name, validity: dt.timedelta
) -> x509.CertificateBuilder:
    """A certificate builder whose subject and issuer are ``name``, valid from 5 minutes ago."""
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
    )


def new_ca(org: str, common_name: str | None = None) -> CertificateAuthority:
    """Create a self-signed CA for organisation ``org``."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _self_signed_builder(key, _name(common_name or f"ca.{org}", org), _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(org, key, cert)


def new_identity(ca: CertificateAuthority, msp_id: str, name: str = "User1") -> SigningIdentity:
    """Enrol a client identity of MSP ``msp_id`` with a certificate from ``ca``."""
    issued = ca.issue(f"{name}@{ca.org}")
    return SigningIdentity(msp_id, issued.cert_pem, issued.private_key)


def self_signed_identity(msp_id: str, common_name: str, *, days: int = 3650) -> IssuedCertificate:
    """A long-lived self-signed P-256 certificate and key (a per-user dev writer identity).

    Unlike :meth:`CertificateAuthority.issue` (valid one day, for throw-away gateways), this
    is meant to be kept on disk: the embedded ledger signs its blocks with it and an
    auditor pins its certificate (``hyperfed audit --trust-cert``).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _self_signed_builder(key, _name(common_name, msp_id), dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return IssuedCertificate(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))
