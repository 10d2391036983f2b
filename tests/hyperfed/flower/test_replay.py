"""An exact forget's replay as a Flower run: the server holds no data, the clients left train.

The deployment path is tested here up to the SuperLink: a forget that names a SuperLink
which is down stays pending; the ServerApp (run on an in-process grid, as a SuperLink would
run it) writes the replay; the resumed forget swaps it in. The opt-in deployment test in
``test_flwr_run.py`` runs the same over a real SuperLink and SuperNodes.
"""

from __future__ import annotations

import pytest
import torch
from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp

from hyperfed.errors import ForgetInterruptedError
from hyperfed.flower import InProcessGrid, keys, run_inprocess
from hyperfed.flower.client_app import app as real_app
from hyperfed.flower.errors import ClientIdentityError
from hyperfed.flower.processes import free_port
from hyperfed.flower.replay import replay_on_grid
from hyperfed.flower.server_app import app as server_app
from hyperfed.rundir import RunDirectory
from hyperfed.rundir.audit import audit_run
from hyperfed.rundir.layout import layout_strays
from hyperfed.unlearning import forget_client
from hyperfed.unlearning.forget import pending_forget, recover_pending_forget
from hypernet.errors import ConfigError


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, tiny_module_run_config):
    """A recorded 3-round ServerApp run, a client that joined the training in round 2, and
    the gold standard: the same run without that client."""
    run_config = {**tiny_module_run_config, "rounds": 3, "sample-rate": 0.7, "seed": 2}
    run = run_inprocess({**run_config, "run-dir": str(tmp_path_factory.mktemp("flower") / "run")})
    sampled = run.history.sampled
    clients = run.server.hypernet.client_ids
    victim = next(c for c in clients if c in sampled[2] and c not in sampled[1])
    others = [c for c in clients if c != victim]
    gold = run_inprocess(run_config, client_ids=others).server.hypernet.state_dict()
    return run_config, run.config.run_dir, victim, others, gold


def _copy_run(recorded, tmp_path) -> RunDirectory:
    import shutil

    shutil.copytree(recorded[1], tmp_path / "run")
    return RunDirectory(tmp_path / "run")


def _same(state: dict, gold: dict) -> bool:
    return state.keys() == gold.keys() and all(torch.equal(state[k], gold[k]) for k in state)


def _spy(seen: list[str]) -> ClientApp:
    """The real ClientApp, noting the type of every message it gets."""
    spy = ClientApp()

    def handler(message, context):
        seen.append(message.metadata.message_type)
        return real_app(message, context)

    for register in (spy.query, spy.train, spy.evaluate):
        register()(handler)
    return spy


def test_the_replay_runs_on_a_grid_of_the_clients_left_ignores_the_forgotten_node_and_equals_gold(recorded, tmp_path):
    run_config, _, victim, others, gold = recorded
    rd = _copy_run(recorded, tmp_path)
    victim_saw: list[str] = []
    ids = [*others, victim]  # the forgotten client's node is still connected
    apps = [real_app] * len(others) + [_spy(victim_saw)]
    grid = InProcessGrid(apps, [{keys.CLIENT_ID: c} for c in ids], run_config)
    server = replay_on_grid(grid, rd, victim, first_round=2, timeout=5)
    assert _same(server.hypernet.state_dict(), gold)  # bit for bit
    assert victim_saw == ["query"]  # asked who it is, then never sent anything


def test_a_replay_refuses_to_start_without_every_remaining_client(recorded, tmp_path):
    run_config, _, victim, others, _ = recorded
    rd = _copy_run(recorded, tmp_path)
    grid = InProcessGrid(real_app, [{keys.CLIENT_ID: c} for c in others[1:]], run_config)
    with pytest.raises(ClientIdentityError, match=others[0]):
        replay_on_grid(grid, rd, victim, first_round=2, timeout=0.5)


def test_an_exact_forget_of_a_flower_run_replays_on_the_grid_and_audits_clean(recorded, tmp_path):
    _, _, victim, _, gold = recorded
    rd = _copy_run(recorded, tmp_path)
    result = forget_client(rd.root, victim, mode="exact")
    assert result.replayed_rounds == [2, 3]
    assert _same(rd.load_checkpoint(3).state_dict(), gold)
    assert audit_run(rd.root).ok


def test_a_deployment_replay_the_server_app_writes_is_swapped_in_by_the_resumed_forget(recorded, tmp_path):
    run_config, _, victim, others, gold = recorded
    rd = _copy_run(recorded, tmp_path)
    down = f"127.0.0.1:{free_port()}"  # no SuperLink listens there
    with pytest.raises(ForgetInterruptedError, match="--resume"):
        forget_client(rd.root, victim, mode="exact", superlink=down)
    journal = pending_forget(rd.root)
    assert journal["superlink"] == down and journal["done"] == []  # committed, nothing done yet

    # What the SuperLink does with the replay run: the ServerApp on a grid of the connected nodes.
    replay = {"run-dir": str(rd.root), keys.REPLAY_WITHOUT: victim, keys.REPLAY_FROM: 2}
    grid = InProcessGrid(real_app, [{keys.CLIENT_ID: c} for c in others], {**run_config, **replay})
    server_app(grid, Context(1, 0, {}, RecordDict(), {**run_config, **replay}))
    assert (rd.forget_dir(victim) / "replay" / "hypernet.json").exists()

    result = recover_pending_forget(rd.root)  # the result is there: no second replay run
    assert result.replayed_rounds == [2, 3]
    assert _same(rd.load_checkpoint(3).state_dict(), gold)
    assert not (rd.forget_dir(victim) / "replay").exists() and not layout_strays(rd.root)
    assert audit_run(rd.root).ok


def test_the_server_app_replays_only_for_a_pending_exact_forget_of_that_client(recorded, tmp_path):
    run_config, _, victim, others, _ = recorded
    rd = _copy_run(recorded, tmp_path)
    replay = {"run-dir": str(rd.root), keys.REPLAY_WITHOUT: victim, keys.REPLAY_FROM: 2}
    grid = InProcessGrid(real_app, [{keys.CLIENT_ID: c} for c in others], {**run_config, **replay})
    with pytest.raises(ConfigError, match="no pending exact forget"):
        server_app(grid, Context(1, 0, {}, RecordDict(), {**run_config, **replay}))
    assert not rd.forget_dir(victim).exists()


@pytest.mark.parametrize(
    "keys_given",
    [{keys.REPLAY_WITHOUT: "code/asyncio"}, {keys.REPLAY_FROM: 2}, {keys.REPLAY_WITHOUT: "a", keys.REPLAY_FROM: 0}],
)
def test_half_a_replay_request_is_refused(keys_given):
    with pytest.raises(ValueError, match="replay run needs"):
        keys.split_replay_keys({"rounds": 3, **keys_given})


def test_no_replay_keys_or_their_defaults_mean_no_replay():
    assert keys.split_replay_keys({"rounds": 3}) == ({"rounds": 3}, None)
    assert keys.split_replay_keys({"rounds": 3, **keys.REPLAY_DEFAULTS}) == ({"rounds": 3}, None)
