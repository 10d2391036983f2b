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
:class:`LocalGatewayServer` / :func:`connect_local_gateway`
    A signature-checking Gateway endpoint on loopback running the contract on an
    embedded ledger (tests, benchmarks, demos).
"""

from .client import CommitStatus, GatewayBackend, PreparedTransaction, gateway_backend_from_url
from .config import URL_SCHEME, GatewayConfig, GatewayTimeouts, TlsConfig
from .errors import LedgerAccessDeniedError, TransactionInvalidError, TransactionOutcomeUnknownError
from .identity import SigningIdentity, load_identity, transaction_id
from .local_server import FaultPlan, LocalGatewayServer, ServerTls, connect_local_gateway

__all__ = [
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
    "LocalGatewayServer",
    "ServerTls",
    "FaultPlan",
    "connect_local_gateway",
]
