import copy

import torch

from hyperfed.federation import FederationConfig, make_server, run_rounds
from hyperfed.rundir import RunDirectory, client_file_name, client_from_file_name, load_optimizer_file
from hypernet import ClientData, LocalTrainConfig
from hypernet.base_models import add_lora, tiny_llama


def _clients():
    g = torch.Generator().manual_seed(0)
    return {
        cid: ClientData(
            train=torch.randint(0, 256, (8, 32), generator=g), val=torch.randint(0, 256, (2, 32), generator=g)
        )
        for cid in ("a/1", "b", "c")
    }


def test_checkpoint_with_optimizer_state_resumes_bitwise(tmp_path):
    model = add_lora(tiny_llama(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1), rank=2)
    clients = _clients()
    config = FederationConfig(rounds=4, local=LocalTrainConfig(steps=1, batch_size=2))
    straight = make_server("hyperlora", copy.deepcopy(model), config)
    run_rounds(straight, straight.trainer.model, clients, config)

    first = make_server("hyperlora", copy.deepcopy(model), config)
    run_rounds(first, first.trainer.model, clients, config, last_round=2)
    rd = RunDirectory(tmp_path)
    rd.save_checkpoint(2, first.hypernet, first.trainer)
    assert rd.checkpoint_rounds() == [2]
    resumed = make_server("hyperlora", copy.deepcopy(model), config, hypernet=rd.load_checkpoint(2))
    resumed.trainer.load_state_dict(load_optimizer_file(rd.checkpoint_dir(2)))
    run_rounds(resumed, resumed.trainer.model, clients, config, first_round=3, last_round=4)
    a, b = straight.hypernet.state_dict(), resumed.hypernet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_optimizer_tensors_are_keyed_by_client_id(tmp_path):
    model = add_lora(tiny_llama(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1), rank=2)
    config = FederationConfig(rounds=2, local=LocalTrainConfig(steps=1, batch_size=2))
    server = make_server("hyperlora", model, config)
    run_rounds(server, model, _clients(), config)
    keys = server.trainer.state_dict()
    assert {"client/a/1/exp_avg", "client/b/exp_avg_sq"} <= set(keys)


def test_adapter_files_round_trip_with_odd_client_ids(tmp_path):
    rd = RunDirectory(tmp_path)
    adapter = {"x.lora_A.weight": torch.ones(2, 3)}
    digest = rd.save_adapter(1, "org/team a", adapter)
    assert rd.adapter_clients(1) == ["org/team a"]
    assert torch.equal(rd.load_adapter(1, "org/team a")["x.lora_A.weight"], adapter["x.lora_A.weight"])
    assert len(digest) == 64
    assert client_from_file_name(client_file_name("a/b c%")) == "a/b c%"


def test_a_checkpoint_resaved_without_a_trainer_keeps_its_optimizer_file(tmp_path):
    model = add_lora(tiny_llama(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1), rank=2)
    config = FederationConfig(rounds=1, local=LocalTrainConfig(steps=1, batch_size=2))
    server = make_server("hyperlora", model, config)
    run_rounds(server, model, _clients(), config)
    rd = RunDirectory(tmp_path)
    rd.save_checkpoint(1, server.hypernet, server.trainer)
    state = load_optimizer_file(rd.checkpoint_dir(1))
    assert state
    rd.save_checkpoint(1, server.hypernet)  # e.g. a forget rewriting the weights only
    again = load_optimizer_file(rd.checkpoint_dir(1))
    assert set(again) == set(state) and all(torch.equal(again[k], state[k]) for k in state)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["round-0001"]  # no leftovers


def test_require_run_names_what_is_not_a_run(tmp_path):
    import pytest

    from hyperfed.errors import NotARunError

    (tmp_path / "file").write_text("x")
    for path, says in ((tmp_path / "missing", "does not exist"), (tmp_path / "file", "not a directory")):
        with pytest.raises(NotARunError, match=says):
            RunDirectory(path).require_run()
    with pytest.raises(NotARunError, match="no run.json"):
        RunDirectory(tmp_path).require_run()
    (tmp_path / "run.json").write_text("{}")
    assert RunDirectory(tmp_path).require_run().root == tmp_path
