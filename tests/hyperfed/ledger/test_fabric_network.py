"""Opt-in: the Gateway client against a real Hyperledger Fabric network.

Skipped unless ``HYPERFED_FABRIC_GATEWAY`` is set. With fabric-samples' test-network and
the chaincode deployed by ``./network.sh deployCCAAS -ccn hyperfed -ccp <repo>/chaincode``
(see chaincode/README.md), from ``fabric-samples/test-network``::

    ORG=$PWD/organizations/peerOrganizations/org1.example.com
    export HYPERFED_FABRIC_GATEWAY=localhost:7051
    export HYPERFED_FABRIC_MSP=Org1MSP
    export HYPERFED_FABRIC_CERT=$ORG/users/User1@org1.example.com/msp/signcerts
    export HYPERFED_FABRIC_KEY=$ORG/users/User1@org1.example.com/msp/keystore
    export HYPERFED_FABRIC_TLS_ROOT=$ORG/peers/peer0.org1.example.com/tls/ca.crt
    export HYPERFED_FABRIC_SERVER_NAME=peer0.org1.example.com   # optional
    export HYPERFED_FABRIC_CHANNEL=mychannel                    # default
    export HYPERFED_FABRIC_CHAINCODE=hyperfed                   # default
    pytest -m fabric tests/hyperfed/ledger/test_fabric_network.py

The first run configures the ledger's writer MSP (``init_ledger``) as the test identity's
MSP when the channel has none yet; if another MSP is the writer, write tests are skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import grpc
import pytest
from fabric_protos.gateway import gateway_pb2

from hyperfed.errors import ContractViolationError, LedgerConflictError
from hyperfed.ledger import violation_code
from hyperfed.ledger.gateway import (
    GatewayBackend,
    LedgerAccessDeniedError,
    TlsConfig,
    load_identity,
)
from hyperfed.ledger.gateway.errors import map_rpc_error
from hyperfed.ledger.gateway.proposal import build_proposal

ENV = "HYPERFED_FABRIC_"

pytestmark = [
    pytest.mark.fabric,
    pytest.mark.skipif(
        not os.environ.get(ENV + "GATEWAY"),
        reason="set HYPERFED_FABRIC_GATEWAY (and _MSP, _CERT, _KEY, _TLS_ROOT) to run",
    ),
]


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(ENV + name, default)
    if not value:
        pytest.fail(f"{ENV}{name} must be set when {ENV}GATEWAY is")
    return value


@pytest.fixture(scope="module")
def backend():
    tls_root = os.environ.get(ENV + "TLS_ROOT")
    server_name = os.environ.get(ENV + "SERVER_NAME")
    tls = TlsConfig.from_files(tls_root, server_name=server_name) if tls_root else None
    made = GatewayBackend(
        _env("GATEWAY"),
        channel=_env("CHANNEL", "mychannel"),
        chaincode=_env("CHAINCODE", "hyperfed"),
        identity=load_identity(_env("MSP"), _env("CERT"), _env("KEY")),
        tls=tls,
    )
    yield made
    made.close()


@pytest.fixture(scope="module")
def writer(backend):
    """The backend, once the ledger's writer is this identity's MSP (skips otherwise)."""
    msp = backend.identity.msp_id
    try:
        config = json.loads(backend.evaluate("get_config"))
    except ContractViolationError as exc:
        assert violation_code(exc) == "not-configured", str(exc)
        backend.submit("init_ledger", msp)
        config = json.loads(backend.evaluate("get_config"))
    if config["writer_msp"] != msp:
        pytest.skip(f"the channel's writer MSP is {config['writer_msp']}, not {msp}")
    return backend


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_submit_commit_and_query_on_fabric(writer):
    client_id = f"it-{uuid.uuid4().hex[:12]}"
    prepared = writer.prepare("register_client", client_id, _digest(client_id))
    record = json.loads(writer.commit(prepared))["record"]
    assert record["registered_tx"] == prepared.transaction_id
    status = writer.commit_status(prepared.transaction_id)
    assert status.successful and status.block_number > 0
    assert json.loads(writer.evaluate("get_client", client_id))["commitment"] == _digest(client_id)
    # A retry of the same record is a replay on the real chaincode too.
    replay = json.loads(writer.submit("register_client", client_id, _digest(client_id)))
    assert replay["replayed"] is True


def test_contract_refusal_is_a_contract_violation_on_fabric(writer):
    client_id = f"it-{uuid.uuid4().hex[:12]}"
    writer.submit("register_client", client_id, _digest(client_id))
    with pytest.raises(ContractViolationError) as info:
        writer.submit("register_client", client_id, _digest("another"))
    assert violation_code(info.value) == "duplicate-client"


def test_mvcc_conflict_on_fabric(writer):
    client_id = f"it-{uuid.uuid4().hex[:12]}"
    first = writer.prepare("register_client", client_id, _digest(client_id))
    second = writer.prepare("register_client", client_id, _digest(client_id))
    writer.commit(first)
    with pytest.raises(LedgerConflictError, match="MVCC_READ_CONFLICT"):
        writer.commit(second)


def test_peer_refuses_a_tampered_proposal_signature(backend):
    proposed = build_proposal(
        backend.identity, channel=backend.channel, chaincode=backend.chaincode, args=[b"get_config"]
    )
    proposed.signed_proposal.signature = backend.identity.sign(b"something else")
    request = gateway_pb2.EvaluateRequest(
        transaction_id=proposed.transaction_id,
        channel_id=backend.channel,
        proposed_transaction=proposed.signed_proposal,
    )
    with pytest.raises(grpc.RpcError) as info:
        backend._stub.Evaluate(request, timeout=backend.timeouts.evaluate)
    assert isinstance(map_rpc_error(info.value, operation="Evaluate"), LedgerAccessDeniedError)
