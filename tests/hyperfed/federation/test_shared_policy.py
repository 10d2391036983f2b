"""FederationConfig.shared_policy: shared / frozen / dp, and the frozen proof in the audit."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hyperfed.config import RunConfig
from hyperfed.federation import FederationConfig, make_server, run_rounds
from hyperfed.ledger.client import Ledger
from hyperfed.rundir import RunDirectory
from hyperfed.rundir.audit import audit_run
from hyperfed.rundir.audit.policy import frozen_shared_problems, recorded_policies, shared_policy_of
from hyperfed.rundir.fingerprints import POLICY_PART, policy_digest, run_policy, shared_weights_hash
from hyperfed.rundir.recorder import RunRecorder
from hyperfed.unlearning import forget_client
from hypernet import ClientData, LocalTrainConfig, load_hypernet, save_hypernet
from hypernet.errors import ConfigError
from hypernet.io import HYPERNET_WEIGHTS


def _clients(n=3):
    g = torch.Generator().manual_seed(0)
    return {
        f"c{i}": ClientData(torch.randint(0, 256, (6, 16), generator=g), torch.randint(0, 256, (2, 16), generator=g))
        for i in range(n)
    }


def _config(policy, **kw):
    local = LocalTrainConfig(steps=2, batch_size=2)
    return FederationConfig(rounds=3, lora_rank=2, local=local, shared_policy=policy, client_residual=True, **kw)


@pytest.mark.parametrize("policy", ["frozen", "shared", "dp"])
def test_only_shared_and_dp_change_the_shared_weights(tiny_peft, policy):
    config = _config(policy)
    server = make_server("hyperlora", tiny_peft, config)
    clients = _clients()
    server.register(sorted(clients))
    start = shared_weights_hash(server.hypernet)
    residual = server.hypernet.residual_parameter("c0").detach().clone()
    embedding = server.hypernet.client_parameter("c0").detach().clone()
    hashes = []
    run_rounds(
        server, tiny_peft, clients, config, callback=lambda _: hashes.append(shared_weights_hash(server.hypernet))
    )
    assert len(hashes) == config.rounds
    if policy == "frozen":
        assert hashes == [start] * config.rounds  # the frozen shared hash never changes
    else:
        assert len({start, *hashes}) == config.rounds + 1  # every round moved them
    assert not torch.equal(residual, server.hypernet.residual_parameter("c0"))  # client state learns
    assert not torch.equal(embedding, server.hypernet.client_parameter("c0"))


def test_policy_keys_travel_in_the_flat_run_config_and_run_json():
    config = RunConfig.from_run_config(
        {
            "shared-policy": "dp",
            "dp-noise-multiplier": 2,
            "dp-clip": 0.5,
            "dp-delta": 1e-6,
            "dp-scope": "base",
            "client-residual": True,
        }
    )
    fed = config.federation
    assert fed.dp_scope == "base"
    assert run_policy(config.to_dict())["dp_scope"] == "base"  # recorded with the policy
    assert (fed.shared_policy, fed.dp_noise_multiplier, fed.dp_clip, fed.dp_delta, fed.client_residual) == (
        "dp",
        2.0,
        0.5,
        1e-6,
        True,
    )
    assert config.to_dict()["federation"]["shared_policy"] == "dp"
    assert RunConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="shared_policy"):
        FederationConfig(shared_policy="sometimes")
    with pytest.raises(ConfigError, match="dp_clip"):
        FederationConfig(dp_clip=0.0)


def _frozen_run(root: Path, tiny_peft) -> tuple[RunDirectory, FederationConfig]:
    config = _config("frozen")
    rd = RunDirectory(root)
    rd.root.mkdir(parents=True, exist_ok=True)
    rd.write_json(rd.config_path, RunConfig(federation=config).to_dict())
    server = make_server("hyperlora", tiny_peft, config)
    clients = _clients()
    server.register(sorted(clients))
    with RunRecorder.open(rd) as recorder:
        recorder.register_clients(sorted(clients), server.hypernet)
        recorder.record_checkpoint(0, server.hypernet, server.trainer)
        run_rounds(server, tiny_peft, clients, config, callback=recorder.round_callback(server))
    return rd, config


def test_frozen_audit_proves_the_committed_shared_hash_and_catches_a_change(tiny_peft, tmp_path):
    rd, _ = _frozen_run(tmp_path / "run", tiny_peft)
    assert shared_policy_of(rd) == "frozen"
    report = audit_run(rd)
    policy = [f for f in report.findings if f.check == "policy"]
    assert report.ok and [f.status for f in policy] == ["match", "match"]  # recorded policy; frozen hash
    forget_client(rd, "c1", "delete")  # exact by construction: the shared hash is untouched
    report = audit_run(rd)
    assert report.ok and [f.status for f in report.findings if f.check == "policy"] == ["match", "match"]
    assert frozen_shared_problems(rd) == []
    # the shared weights of a later checkpoint change: the frozen proof breaks
    folder = rd.checkpoint_dir(max(rd.checkpoint_rounds()))
    hypernet = load_hypernet(folder)
    with torch.no_grad():
        hypernet.base_parameters()[0].add_(1e-3)
    save_hypernet(hypernet, folder)
    assert set(load_file(folder / HYPERNET_WEIGHTS))  # still a readable checkpoint
    problems = frozen_shared_problems(rd)
    assert [Path(c).name for c, _ in problems] == [folder.name]
    report = audit_run(rd)
    assert not report.ok and any(f.check == "policy" and f.status == "mismatch" for f in report.findings)


def test_frozen_delete_equals_retraining_without_the_client(tiny_peft):
    # equal to float rounding: the generation batch has 3 clients in one run, 2 in the other
    import copy

    config = _config("frozen")
    clients = _clients()
    full = make_server("hyperlora", copy.deepcopy(tiny_peft), config)
    run_rounds(full, full.trainer.model, clients, config)
    full.trainer.remove_client("c1")  # delete mode
    gold = make_server("hyperlora", copy.deepcopy(tiny_peft), config)
    run_rounds(gold, gold.trainer.model, {c: d for c, d in clients.items() if c != "c1"}, config)
    mine, theirs = full.hypernet.state_dict(), gold.hypernet.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        torch.testing.assert_close(mine[key], theirs[key], rtol=0, atol=1e-6, msg=key)


def test_the_policy_is_recorded_with_every_checkpoint_and_run_json_cannot_change_it(tiny_peft, tmp_path):
    rd, _ = _frozen_run(tmp_path / "run", tiny_peft)
    recorded = recorded_policies(rd)
    assert sorted(recorded) == rd.checkpoint_rounds() and len(recorded) >= 2
    assert all(p == {"shared_policy": "frozen", "client_residual": True} for p in recorded.values())
    # on the ledger: the policy's digest is one of each checkpoint's recorded file parts
    ledger = Ledger.from_url(rd.ledger_path)
    try:
        parts = ledger.checkpoint_files()
    finally:
        ledger.close()
    assert all(files[POLICY_PART] == policy_digest(recorded[r]) for (r, _), files in parts.items())
    # run.json rewritten to claim another policy: the audit names the checkpoints that disagree
    config = rd.read_json(rd.config_path)
    config["federation"]["shared_policy"] = "shared"
    rd.write_json(rd.config_path, config)
    report = audit_run(rd)
    bad = [f for f in report.findings if f.check == "policy" and f.status == "mismatch"]
    assert not report.ok and len(bad) == len(recorded)
    assert "run.json states policy" in bad[0].message and "'frozen'" in bad[0].message
