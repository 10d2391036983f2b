"""A run made by the Flower ServerApp is a run like any other: same run.json, forget
(both modes) and audit work on it."""

from __future__ import annotations

import json

import pytest
import torch

from hyperfed.config import RunConfig
from hyperfed.flower import run_inprocess
from hyperfed.rundir import RunDirectory
from hyperfed.rundir.audit import audit_run
from hyperfed.unlearning import forget_client


@pytest.fixture
def server_app_run(tiny_run_config, tmp_path):
    run_config = {**tiny_run_config, "rounds": 3, "sample-rate": 0.7, "seed": 2, "run-dir": str(tmp_path / "run")}
    return run_config, run_inprocess(run_config)


def test_the_server_app_writes_the_same_run_json_as_the_experiment(server_app_run):
    run_config, run = server_app_run
    written = RunConfig.from_dict(json.loads(RunDirectory(run_config["run-dir"]).config_path.read_text()))
    assert written.federation == run.config.federation and written.corpus == run.config.corpus
    assert written.base_model == run.config.base_model and written.methods == ("hyperlora",)


def test_exact_forget_of_a_server_app_run_equals_a_run_without_the_client_and_audits_clean(server_app_run):
    run_config, run = server_app_run
    clients = run.server.hypernet.client_ids
    history = run.history.sampled
    victim = next(c for c in clients if c in history[2] and c not in history[1])  # joined the training late
    result = forget_client(run_config["run-dir"], victim, mode="exact")
    assert result.replayed_rounds == [2, 3]

    others = [c for c in clients if c != victim]
    gold = run_inprocess({k: v for k, v in run_config.items() if k != "run-dir"}, client_ids=others).server.hypernet
    forgotten = RunDirectory(run_config["run-dir"]).load_checkpoint(3)
    assert forgotten.client_ids == gold.client_ids
    mine, theirs = forgotten.state_dict(), gold.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)  # bit for bit

    report = audit_run(run_config["run-dir"])
    assert report.ok, [f.message for f in report.failures()]
    assert report.forgotten == (victim,)
