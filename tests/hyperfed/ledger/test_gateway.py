"""Fabric Gateway client: signing, proposals, and the client against a local gateway endpoint.

The endpoint (``LocalGatewayServer``) is a real gRPC Gateway service that checks every
signature like a Fabric peer and runs the HyperFed contract on an embedded ledger, so
these tests exercise the whole path: sign → Endorse → sign envelope → Submit → CommitStatus.
"""

from __future__ import annotations

import hashlib
import json
import socket

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.peer import chaincode_pb2, proposal_pb2

from hyperfed.errors import (
    ConfigError,
    ContractViolationError,
    LedgerConflictError,
    LedgerUnavailableError,
)
from hyperfed.ledger.devnet import LocalGatewayServer, ServerTls, connect_local_gateway
from hyperfed.ledger.devnet.pki import new_ca, new_identity
from hyperfed.ledger.embedded import EmbeddedLedger
from hyperfed.ledger.gateway import (
    GatewayBackend,
    GatewayConfig,
    GatewayTimeouts,
    LedgerAccessDeniedError,
    SigningIdentity,
    TlsConfig,
    TransactionInvalidError,
    TransactionOutcomeUnknownError,
    gateway_backend_from_url,
    load_identity,
)
from hyperfed.ledger.gateway.errors import map_rpc_error
from hyperfed.ledger.gateway.identity import is_low_s, verify_signature
from hyperfed.ledger.gateway.proposal import (
    build_proposal,
    sign_envelope,
    signed_commit_status_request,
)

MSP = "HyperFedMSP"
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
COMMITMENT = "ab" * 32
FAST = dict(timeouts=GatewayTimeouts(evaluate=2, endorse=2, submit=0.3, commit_status=2), backoff=0.01)


@pytest.fixture(scope="module")
def ca():
    return new_ca("hyperfed.example.com")


@pytest.fixture(scope="module")
def identity(ca):
    return new_identity(ca, MSP)


@pytest.fixture
def gateway(tmp_path):
    backend = connect_local_gateway(tmp_path / "ledger.db", **FAST)
    yield backend
    backend.close()


def connect(endpoint: str, identity: SigningIdentity, **options) -> GatewayBackend:
    """A backend on channel/chaincode ``hyperfed`` with short test deadlines."""
    return GatewayBackend(endpoint, channel="hyperfed", chaincode="hyperfed", identity=identity, **{**FAST, **options})


def raw_stub(backend: GatewayBackend) -> gateway_pb2_grpc.GatewayStub:
    """A bare Gateway stub, for sending requests the client would never build."""
    return gateway_pb2_grpc.GatewayStub(grpc.insecure_channel(backend.server.endpoint))


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def endorse(stub, proposed):
    return stub.Endorse(
        gateway_pb2.EndorseRequest(
            transaction_id=proposed.transaction_id, channel_id="hyperfed", proposed_transaction=proposed.signed_proposal
        ),
        timeout=5,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------- signing


def test_signatures_are_low_s_der_and_verify(identity):
    public = identity.private_key.public_key()
    for i in range(64):  # about half of raw ECDSA signatures are high-S
        message = f"message {i}".encode()
        signature = identity.sign(message)
        r, s = decode_dss_signature(signature)
        assert s <= P256_ORDER // 2 and is_low_s(signature)
        assert verify_signature(public, message, signature)
        assert not verify_signature(public, message + b"!", signature)
        # The mirror signature (r, n - s) is valid ECDSA but Fabric refuses it.
        high = encode_dss_signature(r, P256_ORDER - s)
        public.verify(high, message, ec.ECDSA(hashes.SHA256()))  # mathematically valid
        assert not verify_signature(public, message, high)


def test_proposal_layout_and_transaction_id(identity):
    nonce = bytes(range(24))
    args = [b"register_client", b"alice", COMMITMENT.encode()]
    proposed = build_proposal(
        identity, channel="mychannel", chaincode="hyperfed", args=args, nonce=nonce, now=1_700_000_000.25
    )
    creator = identity.creator
    assert proposed.transaction_id == hashlib.sha256(nonce + creator).hexdigest()

    signed = proposed.signed_proposal
    assert verify_signature(identity.private_key.public_key(), signed.proposal_bytes, signed.signature)
    proposal = proposal_pb2.Proposal.FromString(signed.proposal_bytes)
    header = common_pb2.Header.FromString(proposal.header)
    channel_header = common_pb2.ChannelHeader.FromString(header.channel_header)
    assert channel_header.type == common_pb2.HeaderType.ENDORSER_TRANSACTION
    assert (channel_header.channel_id, channel_header.tx_id, channel_header.epoch) == (
        "mychannel",
        proposed.transaction_id,
        0,
    )
    timestamp = channel_header.timestamp
    assert (timestamp.seconds, timestamp.nanos) == (1_700_000_000, 250_000_000)
    assert channel_header.tls_cert_hash == b""
    extension = proposal_pb2.ChaincodeHeaderExtension.FromString(channel_header.extension)
    assert extension.chaincode_id.name == "hyperfed"
    signature_header = common_pb2.SignatureHeader.FromString(header.signature_header)
    assert (signature_header.creator, signature_header.nonce) == (creator, nonce)
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
    spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input).chaincode_spec
    assert spec.chaincode_id.name == "hyperfed"
    assert list(spec.input.args) == args


def test_load_identity_from_files_and_msp_layout(tmp_path, ca):
    issued = ca.issue("User1@hyperfed.example.com")
    signcerts, keystore = tmp_path / "signcerts", tmp_path / "keystore"
    signcerts.mkdir()
    keystore.mkdir()
    (signcerts / "cert.pem").write_bytes(issued.cert_pem)
    (keystore / "priv_sk").write_bytes(issued.key_pem)
    loaded = load_identity(MSP, signcerts, keystore)
    assert loaded.certificate_pem == issued.cert_pem
    from_files = load_identity(MSP, signcerts / "cert.pem", keystore / "priv_sk")
    assert from_files.creator == loaded.creator

    other = ca.issue("User2@hyperfed.example.com")
    (tmp_path / "other_sk").write_bytes(other.key_pem)
    with pytest.raises(ConfigError, match="does not match"):
        load_identity(MSP, signcerts, tmp_path / "other_sk")
    (keystore / "second_sk").write_bytes(other.key_pem)
    with pytest.raises(ConfigError, match="exactly one file"):
        load_identity(MSP, signcerts, keystore)
    with pytest.raises(ConfigError, match="P-256"):
        SigningIdentity(MSP, issued.cert_pem, ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ConfigError, match="not found"):
        load_identity(MSP, tmp_path / "missing.pem", tmp_path / "other_sk")


def test_gateway_url_parsing():
    config = GatewayConfig.from_url(
        "fabric+gateway://localhost:7051?channel=mychannel&chaincode=hyperfed&msp=Org1MSP"
        "&cert=/msp/signcerts&key=/msp/keystore&tls_root=/tls/ca.crt"
        "&server_name=peer0.org1.example.com&timeout=10&retries=5"
    )
    assert (config.endpoint, config.channel, config.chaincode, config.msp_id) == (
        "localhost:7051",
        "mychannel",
        "hyperfed",
        "Org1MSP",
    )
    assert (config.tls_root, config.server_name, config.max_attempts) == ("/tls/ca.crt", "peer0.org1.example.com", 5)
    assert config.timeouts.evaluate == 10 and config.timeouts.commit_status == 120
    base = "fabric+gateway://h:1?channel=c&chaincode=cc&msp=M&cert=c"
    with pytest.raises(ConfigError, match="missing required"):
        GatewayConfig.from_url(base)
    with pytest.raises(ConfigError, match="unknown gateway URL parameter"):
        GatewayConfig.from_url(base + "&key=k&tls=yes")
    with pytest.raises(ConfigError, match="must start with"):
        GatewayConfig.from_url("grpc://h:1?channel=c")
    with pytest.raises(ConfigError, match="host:port"):
        GatewayConfig.from_url(base.replace("h:1", "nohostport") + "&key=k")


# ------------------------------------------------------------------------ end to end


def test_submit_and_evaluate_round_trip_through_the_signed_path(gateway, tmp_path):
    result = json.loads(gateway.submit("register_client", "alice", COMMITMENT))
    assert result["replayed"] is False and result["record"]["status"] == "active"
    assert json.loads(gateway.evaluate("get_client", "alice"))["commitment"] == COMMITMENT
    assert json.loads(gateway.evaluate("get_config"))["writer_msp"] == MSP

    prepared = gateway.prepare("register_client", "bob", COMMITMENT)
    assert json.loads(prepared.result)["record"]["registered_tx"] == prepared.transaction_id
    assert gateway.commit(prepared) == prepared.result
    status = gateway.commit_status(prepared.transaction_id)
    assert status.successful and status.code_name == "VALID"
    stats = gateway.server.stats
    assert (stats.commits, stats.invalid, stats.rejected_signatures) == (2, 0, 0)

    gateway.close()
    ledger = EmbeddedLedger(tmp_path / "ledger.db")
    try:  # the same transaction ids are in the hash-chained blocks, and the chain verifies
        last = ledger.blocks()[-1]
        assert (last.tx_id, last.number) == (prepared.transaction_id, status.block_number)
        assert ledger.verify().ok
    finally:
        ledger.close()


def test_contract_refusals_raise_contract_violation_and_write_nothing(gateway):
    gateway.submit("register_client", "alice", COMMITMENT)
    commits = gateway.server.stats.commits
    with pytest.raises(ContractViolationError, match=r"\[duplicate-client\]"):
        gateway.submit("register_client", "alice", "cd" * 32)
    with pytest.raises(ContractViolationError, match=r"\[unknown-client\]"):
        gateway.evaluate("get_client", "nobody")
    assert gateway.server.stats.commits == commits


def test_submitting_a_query_function_is_refused_and_appends_no_block(gateway, tmp_path):
    gateway.submit("register_client", "alice", COMMITMENT)
    commits = gateway.server.stats.commits
    for query in ("get_config", "list_clients"):
        with pytest.raises(ContractViolationError, match=r"\[evaluate-only\] " + query):
            gateway.submit(query)
    assert gateway.server.stats.commits == commits
    gateway.close()
    with EmbeddedLedger(tmp_path / "ledger.db") as ledger:
        assert [b.function for b in ledger.blocks()] == ["init_ledger", "register_client"]


def test_untrusted_organisations_and_non_writers_are_refused(tmp_path, ca):
    other = new_identity(ca, "OtherMSP")
    roots = {MSP: [ca.cert_pem]}
    with LocalGatewayServer(tmp_path / "ledger.db", msp_roots=roots) as server:
        # OtherMSP is not a member of the channel: refused before the contract runs.
        with connect(server.endpoint, other) as intruder:
            with pytest.raises(LedgerAccessDeniedError, match="OtherMSP"):
                intruder.submit("register_client", "mallory", COMMITMENT)
    roots["OtherMSP"] = [ca.cert_pem]
    with LocalGatewayServer(tmp_path / "ledger.db", msp_roots=roots) as server:
        # A member, but not the writer MSP: the contract itself refuses.
        with connect(server.endpoint, other) as member:
            with pytest.raises(ContractViolationError, match=r"\[not-writer\]"):
                member.submit("register_client", "mallory", COMMITMENT)
            assert json.loads(member.evaluate("get_config"))["writer_msp"] == MSP


def test_mvcc_conflict_between_two_endorsed_transactions(gateway):
    first = gateway.prepare("register_client", "carol", COMMITMENT)
    second = gateway.prepare("register_client", "carol", COMMITMENT)  # same absent key read
    gateway.commit(first)
    with pytest.raises(LedgerConflictError, match="MVCC_READ_CONFLICT"):
        gateway.commit(second)
    assert gateway.commit_status(second.transaction_id).code_name == "MVCC_READ_CONFLICT"
    # Retrying as a fresh transaction is an idempotent replay of the committed record.
    replay = json.loads(gateway.submit("register_client", "carol", COMMITMENT))
    assert replay["replayed"] is True


def test_unreachable_endpoint_raises_ledger_unavailable(identity):
    with connect(f"127.0.0.1:{free_port()}", identity, max_attempts=2) as backend:
        with pytest.raises(LedgerUnavailableError):
            backend.evaluate("get_config")
        with pytest.raises(LedgerUnavailableError) as info:
            backend.submit("register_client", "alice", COMMITMENT)
        # Endorse never succeeded, so nothing was sent: not an "outcome unknown" case.
        assert not isinstance(info.value, TransactionOutcomeUnknownError)


# ----------------------------------------------------------------- signature checks


def _with_tx_id(gateway, proposed, tx_id: str):
    """Rewrite the channel header's tx id and re-sign, so only the id is wrong."""
    body = proposal_pb2.Proposal.FromString(proposed.signed_proposal.proposal_bytes)
    header = common_pb2.Header.FromString(body.header)
    channel_header = common_pb2.ChannelHeader.FromString(header.channel_header)
    channel_header.tx_id = tx_id
    header.channel_header = channel_header.SerializeToString()
    body.header = header.SerializeToString()
    proposed.signed_proposal.proposal_bytes = body.SerializeToString()
    proposed.signed_proposal.signature = gateway.identity.sign(body.SerializeToString())
    return proposed


def _with_argument(proposed, index: int, value: bytes):
    """Change one chaincode argument *after* signing."""
    body = proposal_pb2.Proposal.FromString(proposed.signed_proposal.proposal_bytes)
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(body.payload)
    spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input)
    spec.chaincode_spec.input.args[index] = value
    payload.input = spec.SerializeToString()
    body.payload = payload.SerializeToString()
    proposed.signed_proposal.proposal_bytes = body.SerializeToString()
    return proposed


def test_tampered_high_s_and_wrongly_derived_proposals_are_rejected(gateway, identity):
    stub = raw_stub(gateway)
    args = [b"register_client", b"alice", COMMITMENT.encode()]

    def proposed(signer=gateway.identity):
        return build_proposal(signer, channel="hyperfed", chaincode="hyperfed", args=args)

    tampered = _with_argument(proposed(), 1, b"mallory")
    high_s = proposed()
    r, s = decode_dss_signature(high_s.signed_proposal.signature)
    high_s.signed_proposal.signature = encode_dss_signature(r, P256_ORDER - s)
    foreign = proposed(identity)  # right MSP id, but a certificate from an untrusted CA
    wrong_id = _with_tx_id(gateway, proposed(), "0" * 64)

    cases = [
        (tampered, "is not valid"),
        (high_s, "not low-S"),
        (foreign, "not issued by a CA"),
        (wrong_id, "invalid txid"),
    ]
    for bad, reason in cases:
        error = rpc_error(lambda bad=bad: endorse(stub, bad))
        assert error.code() == grpc.StatusCode.ABORTED
        mapped = map_rpc_error(error, operation="Endorse")
        assert isinstance(mapped, LedgerAccessDeniedError) and reason in str(mapped)
    assert gateway.server.stats.rejected_signatures == len(cases)
    assert gateway.server.stats.endorsements == 0


def test_tampered_envelopes_and_status_requests_are_rejected(gateway):
    stub = raw_stub(gateway)
    prepared = gateway.prepare("register_client", "alice", COMMITMENT)

    def submit(envelope):
        return stub.Submit(
            gateway_pb2.SubmitRequest(
                transaction_id=prepared.transaction_id, channel_id="hyperfed", prepared_transaction=envelope
            ),
            timeout=5,
        )

    # 1. Orderer: the envelope signature no longer matches the payload.
    forged = common_pb2.Envelope(payload=prepared.envelope.payload + b"\x00", signature=prepared.envelope.signature)
    error = rpc_error(lambda: submit(forged))
    assert error.code() == grpc.StatusCode.ABORTED
    assert isinstance(map_rpc_error(error, operation="Submit"), LedgerAccessDeniedError)

    # 2. Committer: the result was altered and the envelope re-signed by the client, so
    #    the peer's endorsement no longer covers it.
    payload = common_pb2.Payload.FromString(prepared.envelope.payload)
    data = payload.data.replace(b'"replayed": false', b'"replayed": true ')
    assert data != payload.data
    altered = common_pb2.Payload(header=payload.header, data=data).SerializeToString()
    submit(sign_envelope(gateway.identity, common_pb2.Envelope(payload=altered)))
    status = gateway.commit_status(prepared.transaction_id)
    assert status.code_name == "ENDORSEMENT_POLICY_FAILURE"
    with pytest.raises(TransactionInvalidError, match="ENDORSEMENT_POLICY_FAILURE"):
        gateway.commit(prepared)  # the genuine copy is now a duplicate of an invalid tx
    assert gateway.server.stats.commits == 0

    # 3. CommitStatus: a signature by someone else over the request.
    request = signed_commit_status_request(gateway.identity, channel="hyperfed", tx_id=prepared.transaction_id)
    request.signature = new_identity(new_ca("x"), MSP).sign(request.request)
    error = rpc_error(lambda: stub.CommitStatus(request, timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert isinstance(map_rpc_error(error, operation="CommitStatus"), LedgerAccessDeniedError)


# ---------------------------------------------------------------------- retry safety


def test_lost_submit_reply_is_resolved_by_commit_status_not_resubmitted(gateway):
    gateway.server.faults.lose_submit_reply = 1
    result = json.loads(gateway.submit("register_client", "alice", COMMITMENT))
    assert result["replayed"] is False
    stats = gateway.server.stats
    assert (stats.submits, stats.commits, stats.duplicates) == (1, 1, 0)


def test_submit_failing_before_ordering_resends_the_same_envelope(gateway):
    gateway.server.faults.unavailable_submit = 1
    prepared = gateway.prepare("register_client", "alice", COMMITMENT)
    gateway.commit(prepared)
    stats = gateway.server.stats
    assert (stats.submits, stats.commits) == (1, 1)
    assert gateway.commit_status(prepared.transaction_id).successful


def test_unknown_outcome_resend_is_deduplicated_by_transaction_id(gateway):
    gateway.server.faults.lose_submit_reply = 1
    gateway.server.faults.unavailable_commit_status = 1  # the status probe fails too
    gateway.submit("register_client", "alice", COMMITMENT)
    stats = gateway.server.stats
    assert (stats.submits, stats.commits, stats.duplicates) == (2, 1, 1)


def test_persistent_outage_after_sending_reports_the_transaction_id(gateway):
    gateway.max_attempts = 2
    gateway.server.faults.lose_submit_reply = 1
    gateway.server.faults.unavailable_commit_status = 10
    with pytest.raises(TransactionOutcomeUnknownError) as info:
        gateway.submit("register_client", "alice", COMMITMENT)
    assert isinstance(info.value, LedgerUnavailableError)
    gateway.server.faults.unavailable_commit_status = 0
    status = gateway.commit_status(info.value.transaction_id)  # resolved later, by id
    assert status.successful and gateway.server.stats.commits == 1


def test_endorse_and_evaluate_are_retried_while_unavailable(gateway):
    gateway.server.faults.unavailable_endorse = 2
    gateway.server.faults.unavailable_evaluate = 2
    gateway.submit("register_client", "alice", COMMITMENT)
    assert json.loads(gateway.evaluate("get_client", "alice"))["client_id"] == "alice"
    assert gateway.server.stats.commits == 1 and gateway.server.stats.endorsements == 1


# ------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def tls_pki():
    tls_ca = new_ca("tls.hyperfed.example.com")
    server = tls_ca.issue("peer0.hyperfed.example.com", server_names=("localhost", "127.0.0.1"), client=False)
    client = tls_ca.issue("User1@hyperfed.example.com")
    return tls_ca, server, client


def tls_server(tmp_path, ca, tls_pki, *, mutual: bool) -> LocalGatewayServer:
    tls_ca, server_cert, _ = tls_pki
    tls = ServerTls(server_cert.cert_pem, server_cert.key_pem, tls_ca.cert_pem if mutual else None)
    return LocalGatewayServer(tmp_path / "ledger.db", msp_roots={MSP: [ca.cert_pem]}, tls=tls)


def test_tls_on_loopback(tmp_path, ca, identity, tls_pki):
    tls_ca, _, _ = tls_pki
    with tls_server(tmp_path, ca, tls_pki, mutual=False) as server:
        port = server.endpoint.rsplit(":", 1)[1]
        with connect(f"localhost:{port}", identity, tls=TlsConfig(tls_ca.cert_pem)) as good:
            assert json.loads(good.evaluate("get_config"))["writer_msp"] == MSP
            good.submit("register_client", "alice", COMMITMENT)
        stranger = new_ca("other-tls")  # a root that did not sign the server's certificate
        untrusted = TlsConfig(stranger.cert_pem, server_name="localhost")
        with connect(server.endpoint, identity, tls=untrusted, max_attempts=1) as bad:
            with pytest.raises(LedgerUnavailableError):
                bad.evaluate("get_config")


def test_mutual_tls_binds_the_client_certificate_hash(tmp_path, ca, identity, tls_pki):
    tls_ca, _, client_cert = tls_pki
    der = x509.load_pem_x509_certificate(client_cert.cert_pem).public_bytes(serialization.Encoding.DER)
    tls = TlsConfig(tls_ca.cert_pem, client_cert.cert_pem, client_cert.key_pem, server_name="localhost")
    assert tls.client_cert_hash == hashlib.sha256(der).digest()
    with tls_server(tmp_path, ca, tls_pki, mutual=True) as server:
        with connect(server.endpoint, identity, tls=tls) as backend:
            backend.submit("register_client", "alice", COMMITMENT)  # bound to its TLS cert
            # A proposal bound to another TLS certificate is refused.
            wrong = build_proposal(
                identity, channel="hyperfed", chaincode="hyperfed", args=[b"get_config"], tls_cert_hash=b"\x01" * 32
            )
            error = rpc_error(lambda: endorse(backend._stub, wrong))
            assert "TLS certificate hash" in str(map_rpc_error(error, operation="Endorse"))
        server_only = TlsConfig(tls_ca.cert_pem, server_name="localhost")
        with connect(server.endpoint, identity, tls=server_only, max_attempts=1) as anonymous:
            with pytest.raises(LedgerUnavailableError):
                anonymous.evaluate("get_config")


def test_backend_from_url_with_identity_and_tls_files(tmp_path, ca, tls_pki):
    tls_ca, _, _ = tls_pki
    issued = ca.issue("User1@hyperfed.example.com")
    files = {"cert.pem": issued.cert_pem, "key.pem": issued.key_pem, "ca.crt": tls_ca.cert_pem}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with tls_server(tmp_path, ca, tls_pki, mutual=False) as server:
        url = (
            f"fabric+gateway://{server.endpoint}?channel=hyperfed&chaincode=hyperfed&msp={MSP}"
            f"&cert={tmp_path / 'cert.pem'}&key={tmp_path / 'key.pem'}"
            f"&tls_root={tmp_path / 'ca.crt'}&server_name=localhost&timeout=2"
        )
        with gateway_backend_from_url(url) as backend:
            record = json.loads(backend.submit("register_client", "alice", COMMITMENT))
            assert record["replayed"] is False and backend.identity.msp_id == MSP
