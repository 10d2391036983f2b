"""Throughput of the Fabric Gateway client against the local gateway endpoint on loopback.

Each submit is the full signed path — build + sign proposal, ``Endorse`` (signature and
tx-id checks, contract simulation), sign envelope, ``Submit`` (envelope signature,
endorsement check, durable commit of a hash-chained block with ``synchronous=FULL``) and
``CommitStatus`` — one transaction at a time, as HyperFed records. Each evaluate is a
signed ``Evaluate`` query. A real Fabric network adds ordering (block cutting, 2 s batch
timeout on test-network) and multi-peer endorsement, so these figures are the client's and
the contract's ceiling, not a network's.

Run: ``python -m bench.ledger_gateway [n] [--tls]`` (or ``python bench/ledger_gateway.py``).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":  # run as a script: keep bench/*.py from shadowing the packages
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]

from hyperfed.ledger.devnet import LocalGatewayServer, ServerTls
from hyperfed.ledger.devnet.pki import new_ca, new_identity
from hyperfed.ledger.gateway import GatewayBackend, TlsConfig

__all__ = ["run_gateway_bench"]

_MSP = "HyperFedMSP"


def _timed(calls) -> list[float]:
    times = []
    for call in calls:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def run_gateway_bench(n: int = 200, *, tls: bool = False) -> dict:
    """Submit ``n`` registrations and evaluate ``n`` queries through the gateway client.

    Parameters
    ----------
    n
        Transactions of each kind.
    tls
        Serve and dial over TLS (server-authenticated) instead of plaintext.

    Returns
    -------
    dict
        ``submit_tx_per_s``, ``evaluate_tx_per_s``, median and p95 latencies in ms, ``n``,
        ``tls`` and a ``backend`` description.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    org_ca = new_ca("bench.hyperfed")
    identity = new_identity(org_ca, _MSP)
    server_tls = client_tls = None
    if tls:
        tls_ca = new_ca("tls.bench.hyperfed")
        cert = tls_ca.issue("peer0", server_names=("localhost",), client=False)
        server_tls = ServerTls(cert.cert_pem, cert.key_pem)
        client_tls = TlsConfig(tls_ca.cert_pem, server_name="localhost")
    with tempfile.TemporaryDirectory(prefix="hyperfed-gw-bench-") as tmp:
        server = LocalGatewayServer(
            Path(tmp) / "ledger.db",
            msp_roots={_MSP: [org_ca.cert_pem]},
            writer_msp=_MSP,
            tls=server_tls,
        ).start()
        try:
            with GatewayBackend(
                server.endpoint, channel="hyperfed", chaincode="hyperfed", identity=identity, tls=client_tls
            ) as backend:
                backend.evaluate("get_config")  # warm up the channel
                commitment = "ab" * 32
                ids = [f"client-{i:06d}" for i in range(n)]
                submit = _timed((lambda c=c: backend.submit("register_client", c, commitment)) for c in ids)
                evaluate = _timed((lambda c=c: backend.evaluate("get_client", c)) for c in ids)
        finally:
            server.stop()

    def p95(xs: list[float]) -> float:
        return sorted(xs)[max(0, int(round(0.95 * len(xs))) - 1)] * 1e3

    return {
        "backend": "fabric-gateway client -> local gateway endpoint (loopback)",
        "tls": tls,
        "n": n,
        "submit_tx_per_s": n / sum(submit),
        "evaluate_tx_per_s": n / sum(evaluate),
        "submit_ms_p50": statistics.median(submit) * 1e3,
        "submit_ms_p95": p95(submit),
        "evaluate_ms_p50": statistics.median(evaluate) * 1e3,
        "evaluate_ms_p95": p95(evaluate),
    }


if __name__ == "__main__":
    count = int(next((a for a in sys.argv[1:] if a.isdigit()), "200"))
    print(json.dumps(run_gateway_bench(count, tls="--tls" in sys.argv), indent=2))
