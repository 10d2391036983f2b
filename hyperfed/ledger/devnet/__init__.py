"""A local Fabric network stand-in, **for tests and local development only**.

Not a production peer: it is what the test suite, the benchmarks and the notebooks use to
exercise the real :class:`~hyperfed.ledger.gateway.GatewayBackend` over real gRPC when no
Fabric network (Docker) is available.

* :class:`LocalGatewayServer` / :func:`connect_local_gateway` — a Gateway gRPC endpoint on
  loopback that verifies every signature, endorses with its own peer identity and runs the
  HyperFed contract on an :class:`~hyperfed.ledger.embedded.EmbeddedLedger`;
* :mod:`hyperfed.ledger.devnet.endorsement` — the endorser and commit validation it runs;
* :mod:`hyperfed.ledger.devnet.pki` — a throw-away CA and identities (never for production).
"""

from hyperfed.extras import require_extra

require_extra("fabric", "fabric_protos", "grpc", "cryptography", feature="the local Fabric Gateway devnet")

from hyperfed.ledger.devnet.server import FaultPlan, GatewayStats, LocalGatewayServer, ServerTls, connect_local_gateway

__all__ = ["LocalGatewayServer", "connect_local_gateway", "ServerTls", "FaultPlan", "GatewayStats"]
