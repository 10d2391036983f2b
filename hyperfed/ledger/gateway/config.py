"""Configuration of the Fabric Gateway client: endpoint, identity files, TLS, timeouts.

A gateway is addressed by URL, so ``open_ledger`` can build it from one string::

    fabric+gateway://localhost:7051?channel=mychannel&chaincode=hyperfed&msp=Org1MSP
        &cert=/path/msp/signcerts&key=/path/msp/keystore&tls_root=/path/tls/ca.crt
        &server_name=peer0.org1.example.com

Without ``tls_root`` the connection is plaintext (only sensible on loopback).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hyperfed.errors import ConfigError

__all__ = ["URL_SCHEME", "GatewayTimeouts", "TlsConfig", "GatewayConfig"]

URL_SCHEME = "fabric+gateway"


@dataclass(frozen=True)
class GatewayTimeouts:
    """Per-call deadlines in seconds (defaults of the official gateway SDKs).

    Attributes
    ----------
    evaluate, endorse, submit, commit_status
        Deadline of one ``Evaluate``/``Endorse``/``Submit``/``CommitStatus`` call.
        ``commit_status`` bounds the wait for a block, so it is the longest.
    """

    evaluate: float = 5.0
    endorse: float = 15.0
    submit: float = 5.0
    commit_status: float = 60.0

    def __post_init__(self) -> None:
        for name in ("evaluate", "endorse", "submit", "commit_status"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"timeout {name} must be > 0 seconds, got {value!r}")


@dataclass(frozen=True)
class TlsConfig:
    """TLS to the gateway peer.

    Attributes
    ----------
    root_cert
        PEM of the CA that signed the peer's TLS certificate (``tls/ca.crt``).
    client_cert, client_key
        PEM client certificate and key for mutual TLS; both or neither.
    server_name
        Host name to verify instead of the dialled one (``ssl_target_name_override``),
        e.g. ``peer0.org1.example.com`` when dialling ``localhost:7051``.
    """

    root_cert: bytes
    client_cert: bytes | None = None
    client_key: bytes | None = field(default=None, repr=False)
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ConfigError("mutual TLS needs both client_cert and client_key, got only one")
        if b"BEGIN CERTIFICATE" not in self.root_cert:
            raise ConfigError("root_cert must be a PEM certificate (-----BEGIN CERTIFICATE-----)")

    @classmethod
    def from_files(
        cls,
        root_cert: str | os.PathLike[str],
        client_cert: str | os.PathLike[str] | None = None,
        client_key: str | os.PathLike[str] | None = None,
        server_name: str | None = None,
    ) -> TlsConfig:
        """Read the PEM files; a missing file raises :class:`ConfigError` naming it."""
        return cls(
            _read(root_cert, "tls_root"),
            _read(client_cert, "tls_cert") if client_cert else None,
            _read(client_key, "tls_key") if client_key else None,
            server_name,
        )

    @property
    def client_cert_hash(self) -> bytes:
        """SHA-256 of the client certificate's DER form (empty without mutual TLS).

        Fabric binds a proposal to the TLS session with this hash in the channel header.
        """
        if self.client_cert is None:
            return b""
        cert = x509.load_pem_x509_certificate(self.client_cert)
        return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}")
    return p.read_bytes()


_URL_KEYS = {
    "channel": "channel",
    "chaincode": "chaincode",
    "msp": "msp_id",
    "cert": "cert",
    "key": "key",
    "tls_root": "tls_root",
    "tls_cert": "tls_cert",
    "tls_key": "tls_key",
    "server_name": "server_name",
    "contract": "contract",
    "timeout": "timeout",
    "retries": "max_attempts",
}


@dataclass(frozen=True)
class GatewayConfig:
    """Everything needed to open a :class:`~hyperfed.ledger.gateway.GatewayBackend`.

    Attributes
    ----------
    endpoint
        ``host:port`` of a peer running the Gateway service (test-network: ``localhost:7051``).
    channel, chaincode
        Channel name and chaincode name as deployed.
    msp_id, cert, key
        Identity: MSP id and paths to the PEM certificate and key (files, or the
        ``msp/signcerts`` and ``msp/keystore`` directories).
    tls_root, tls_cert, tls_key, server_name
        TLS settings; plaintext when ``tls_root`` is None.
    contract
        Contract name inside the chaincode, if not the default contract.
    timeout
        Scales every default deadline of :class:`GatewayTimeouts` (``timeout`` = evaluate
        deadline; the others keep their default ratios). None keeps the defaults.
    max_attempts
        Attempts for calls that are safe to retry (at least 1).
    """

    endpoint: str
    channel: str
    chaincode: str
    msp_id: str
    cert: str
    key: str
    tls_root: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    server_name: str | None = None
    contract: str | None = None
    timeout: float | None = None
    max_attempts: int = 3

    def __post_init__(self) -> None:
        host, sep, port = self.endpoint.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"endpoint must be host:port, got {self.endpoint!r}")
        for name in ("channel", "chaincode", "msp_id", "cert", "key"):
            if not getattr(self, name):
                raise ConfigError(f"gateway config field {name!r} is required, got {getattr(self, name)!r}")
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {self.timeout!r}")

    @property
    def timeouts(self) -> GatewayTimeouts:
        """Deadlines derived from :attr:`timeout`."""
        if self.timeout is None:
            return GatewayTimeouts()
        scale = self.timeout / GatewayTimeouts.evaluate
        base = GatewayTimeouts()
        return GatewayTimeouts(
            evaluate=self.timeout,
            endorse=base.endorse * scale,
            submit=base.submit * scale,
            commit_status=base.commit_status * scale,
        )

    def tls(self) -> TlsConfig | None:
        """The TLS settings read from disk, or None for plaintext."""
        if self.tls_root is None:
            if self.tls_cert or self.tls_key:
                raise ConfigError("tls_cert/tls_key given without tls_root")
            return None
        return TlsConfig.from_files(self.tls_root, self.tls_cert, self.tls_key, self.server_name)

    @classmethod
    def from_url(cls, url: str) -> GatewayConfig:
        """Parse ``fabric+gateway://host:port?channel=...&chaincode=...&msp=...&cert=...&key=...``.

        Optional query keys: ``tls_root``, ``tls_cert``, ``tls_key``, ``server_name``,
        ``contract``, ``timeout`` (seconds), ``retries`` (attempts).

        Raises
        ------
        ConfigError
            On another scheme, an unknown or repeated key, or a missing required key.
        """
        parts = urlsplit(url)
        if parts.scheme != URL_SCHEME:
            raise ConfigError(f"gateway URL must start with {URL_SCHEME}://, got {url!r}")
        if not parts.netloc:
            raise ConfigError(f"gateway URL has no host:port: {url!r}")
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False)
        unknown = sorted(set(query) - set(_URL_KEYS))
        if unknown:
            raise ConfigError(f"unknown gateway URL parameter(s) {unknown}; allowed: {sorted(_URL_KEYS)}")
        kwargs: dict[str, object] = {}
        for key, values in query.items():
            if len(values) != 1:
                raise ConfigError(f"gateway URL parameter {key!r} given {len(values)} times")
            kwargs[_URL_KEYS[key]] = values[0]
        required = ("channel", "chaincode", "msp", "cert", "key")
        missing = [k for k in required if _URL_KEYS[k] not in kwargs]
        if missing:
            raise ConfigError(f"gateway URL is missing required parameter(s) {missing}: {url!r}")
        try:
            if "timeout" in kwargs:
                kwargs["timeout"] = float(kwargs["timeout"])  # type: ignore[arg-type]
            if "max_attempts" in kwargs:
                kwargs["max_attempts"] = int(kwargs["max_attempts"])  # type: ignore[arg-type]
        except ValueError as exc:
            raise ConfigError(f"bad number in gateway URL {url!r}: {exc}") from exc
        return cls(endpoint=parts.netloc, **kwargs)  # type: ignore[arg-type]
