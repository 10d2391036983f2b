"""The real thing: `flwr run` on a local Simulation Engine (and, opt-in, a loopback deployment)."""

from __future__ import annotations

import os

import psutil
import pytest

from hyperfed.config import RunConfig
from hyperfed.flower import run_flwr_simulation, run_inprocess, run_loopback_deployment
from hyperfed.flower.cache import cached_corpus


def _no_flower_processes_left() -> bool:
    names = ("flower", "flwr", "ray", "raylet", "gcs_server")
    left = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and any(n in " ".join(proc.cmdline()) for n in names):
                left.append(proc)
        except psutil.NoSuchProcess:
            pass
    return not left


def _check_against_inprocess(metrics: dict, run_config: dict, ids: list[str]) -> None:
    assert metrics["clients"].keys() == set(ids)
    assert [r["round"] for r in metrics["rounds"]] == [1, 2]
    assert all(r["accepted"] == sorted(ids) and not r["rejected"] for r in metrics["rounds"])
    assert set(metrics["eval_losses"]) == {"0", "1", "2"}
    # The same clients trained in this process over the in-process grid end where Flower did.
    expected = run_inprocess(run_config, client_ids=ids).history.eval_losses[2]
    assert metrics["eval_losses"]["2"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_flwr_run_on_the_simulation_engine(tiny_run_config, tmp_path):
    run_config = {**tiny_run_config, "rounds": 2}
    ids = cached_corpus(RunConfig.from_run_config(run_config).corpus).client_ids[:3]  # partition-ids 0..2
    result = run_flwr_simulation(run_config, num_supernodes=3, run_dir=tmp_path / "run", timeout=300)
    assert result.status == "finished:completed" and result.run_dir == (tmp_path / "run").resolve()
    assert (result.log_dir / "superlink.log").exists() and (result.run_dir / "run-config.toml").exists()
    assert result.metrics["config"]["min-nodes"] == 3
    _check_against_inprocess(result.metrics, run_config, ids)
    assert _no_flower_processes_left()
    # the ServerApp recorded the run: checkpoints, adapters and ledger records that audit clean
    from hyperfed.rundir.audit import audit_run

    report = audit_run(result.run_dir)
    assert report.ok, [f.message for f in report.failures()]
    assert (result.run_dir / "checkpoints" / "round-0002").is_dir()
    assert len(list((result.run_dir / "adapters" / "round-0001").glob("*.safetensors"))) == 3


@pytest.mark.deployment
@pytest.mark.skipif(os.environ.get("HYPERFED_DEPLOYMENT_TEST") != "1", reason="opt-in: set HYPERFED_DEPLOYMENT_TEST=1")
def test_superlink_and_supernodes_on_loopback(tiny_run_config, tmp_path):
    # Every message starts a fresh ClientApp process on a SuperNode (~5 s of imports here).
    run_config = {**tiny_run_config, "rounds": 2}
    ids = cached_corpus(RunConfig.from_run_config(run_config).corpus).client_ids[1:4]
    result = run_loopback_deployment(run_config, ids, tmp_path / "run", timeout=300)
    assert result.status == "finished:completed"
    assert sorted((result.log_dir).glob("supernode-*.log"))
    _check_against_inprocess(result.metrics, run_config, ids)
    assert _no_flower_processes_left()


@pytest.mark.deployment
@pytest.mark.skipif(os.environ.get("HYPERFED_DEPLOYMENT_TEST") != "1", reason="opt-in: set HYPERFED_DEPLOYMENT_TEST=1")
def test_an_exact_forget_of_a_deployment_run_replays_as_a_flwr_run_on_its_superlink(tiny_run_config, tmp_path):
    import torch

    from hyperfed.flower import loopback_deployment
    from hyperfed.rundir import RunDirectory
    from hyperfed.rundir.audit import audit_run
    from hyperfed.unlearning import forget_client

    run_config = {**tiny_run_config, "rounds": 3, "sample-rate": 0.7, "seed": 2}
    ids = cached_corpus(RunConfig.from_run_config(run_config).corpus).client_ids
    run = run_loopback_deployment(run_config, ids, tmp_path / "run", timeout=600)
    sampled = {int(r): c for r, c in run.metrics["sampled"].items()}
    victim = next(c for c in ids if c in sampled[2] and c not in sampled[1])  # joined the training in round 2
    others = [c for c in ids if c != victim]
    with loopback_deployment(others, tmp_path / "replay") as superlink:  # the clients left, still deployed
        result = forget_client(run.run_dir, victim, mode="exact", superlink=superlink.address)
    assert result.replayed_rounds == [2, 3]
    gold = run_inprocess(run_config, client_ids=others).server.hypernet.state_dict()
    mine = RunDirectory(run.run_dir).load_checkpoint(3).state_dict()
    assert mine.keys() == gold.keys() and all(torch.allclose(mine[k], gold[k], atol=1e-6) for k in mine)
    assert audit_run(run.run_dir).ok
    assert _no_flower_processes_left()
