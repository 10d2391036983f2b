"""Fabric Gateway client (Fabric ≥ 2.4) on ``fabric_protos`` + grpcio + cryptography.

The old Python SDK (``fabric-sdk-py``, import ``hfc``) does not install on Python ≥ 3.10,
so HyperFed speaks the Gateway gRPC API directly, the way the official Go/Node/Java
gateway SDKs do.

Entry points
------------
:class:`GatewayBackend`
    The :class:`~hyperfed.ledger.base.LedgerBackend` for a Fabric network.
:func:`gateway_backend_from_url`
    ``fabric+gateway://host:port?channel=...&chaincode=...&msp=...&cert=...&key=...``.

A signature-checking Gateway endpoint on loopback, for tests and local development, lives
apart from this production client in :mod:`hyperfed.ledger.devnet`.
"""

from hyperfed.extras import require_extra

require_extra("fabric", "fabric_protos", "grpc", "cryptography", feature="the Fabric Gateway client")

from typing import Any

from hyperfed.errors import ConfigError

from .client import CommitStatus, GatewayBackend, PreparedTransaction, gateway_backend_from_url
from .config import URL_SCHEME, GatewayConfig, GatewayTimeouts, TlsConfig
from .errors import LedgerAccessDeniedError, TransactionInvalidError, TransactionOutcomeUnknownError
from .identity import SigningIdentity, load_identity, transaction_id


def open_url(url: str, options: dict[str, Any]) -> GatewayBackend:
    """The :data:`~hyperfed.ledger.backends.BACKENDS` entry: every setting (channel,
    chaincode, identity, TLS) comes from the URL itself."""
    if options:
        raise ConfigError(f"put gateway settings in the URL, not as arguments: {sorted(options)}")
    return gateway_backend_from_url(url)


__all__ = [
    "open_url",
    "URL_SCHEME",
    "GatewayBackend",
    "GatewayConfig",
    "GatewayTimeouts",
    "TlsConfig",
    "PreparedTransaction",
    "CommitStatus",
    "gateway_backend_from_url",
    "SigningIdentity",
    "load_identity",
    "transaction_id",
    "LedgerAccessDeniedError",
    "TransactionOutcomeUnknownError",
    "TransactionInvalidError",
]
