"""The experiment's protocol: early stopping on validation, reporting on test."""

from __future__ import annotations

import json
import math

import pytest

from hyperfed.base_model import BaseModelConfig
from hyperfed.config import EvaluationConfig, RunConfig
from hyperfed.data.corpus import CorpusConfig
from hyperfed.experiment import ExperimentResult, metrics_without_client, run_experiment, select_round, summary_rows
from hyperfed.federation import METHODS, FederationConfig
from hypernet import LocalTrainConfig

CONFIG = RunConfig(
    federation=FederationConfig(rounds=3, local=LocalTrainConfig(steps=2, batch_size=2), lora_rank=2, seed=1),
    corpus=CorpusConfig(
        domains=("code", "docs"), clients_per_domain=2, train_kib=1, val_kib=1, test_kib=1, block_size=32
    ),
    base_model=BaseModelConfig(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, steps=5, batch_size=2, block_size=32
    ),
    methods=tuple(METHODS),
    evaluation=EvaluationConfig(every=1),
    engine="loop",
)


def test_select_round_is_the_argmin_of_mean_validation_loss_earliest_on_ties():
    curve = [(0, {"a": 2.0, "b": 2.0}), (1, {"a": 1.0, "b": 2.0}), (2, {"a": 1.4, "b": 1.6}), (3, {"a": 2.8, "b": 0.1})]
    assert select_round(curve) == 3  # means 2.0, 1.5, 1.5, 1.45: the mean decides, not one client
    curve[3] = (3, {"a": 3.0, "b": 0.5})
    assert select_round(curve) == 1  # 1.5 at rounds 1 and 2: the earliest
    assert select_round([(0, {"a": 1.0}), (5, {"a": 1.2})]) == 0  # no training at all can win
    assert select_round([]) is None


def test_the_result_reports_test_loss_at_the_round_validation_chose():
    result = ExperimentResult(
        final={"local": {"a": 1.3, "b": 1.3}},
        base={"a": 2.0, "b": 2.0},
        curves={},
        seconds={},
        domain_of={},
        run_dir=".",
        curve_losses={"local": [(0, {"a": 2.0, "b": 2.0}), (1, {"a": 1.0, "b": 1.2}), (2, {"a": 1.3, "b": 1.3})]},
        test_curve_losses={"local": [(0, {"a": 2.1, "b": 2.1}), (1, {"a": 5.0, "b": 5.0}), (2, {"a": 0.1, "b": 0.1})]},
        base_test={"a": 2.1, "b": 2.1},
    )
    assert result.selected_round("local") == 1 and result.test("local") == {"a": 5.0, "b": 5.0}  # test never chooses
    out = result.to_dict()
    assert out["selected_round"] == {"local": 1} and out["mean_test"] == {"local": 5.0, "base": 2.1}
    rows = {r["client"]: r for r in summary_rows(result)}
    assert (
        rows["MEAN (test)"]["local-only"] == 5.0
        and rows["selected round"]["local-only"] == 1
        and rows["MEAN (val)"]["local-only"] == 1.1
    )
    # forgetting "a": its validation loss no longer takes part in the choice
    scrubbed = metrics_without_client(out, "a")
    assert scrubbed["selected_round"] == {"local": 1} and scrubbed["test"] == {"local": {"b": 5.0}}
    out["curve_losses"]["local"][2][1]["a"] = 0.5  # a's val makes round 2 win (0.9 < 1.1) …
    assert ExperimentResult.from_dict(out, ".").selected_round("local") == 2
    assert metrics_without_client(out, "a")["selected_round"] == {"local": 1}  # … and without a it is round 1 again


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYPERFED_CACHE", str(tmp_path_factory.mktemp("cache")))
        root = tmp_path_factory.mktemp("run") / "run"
        run_experiment(root, CONFIG)
        return json.loads((root / "metrics.json").read_text())


def test_every_method_is_evaluated_on_val_and_test_and_reported_at_its_selected_round(metrics):
    clients = set(metrics["base"])
    assert set(metrics["base_test"]) == clients and metrics["selection"]
    for method in METHODS:
        val = {r: losses for r, losses in metrics["curve_losses"][method]}
        test = {r: losses for r, losses in metrics["test_curve_losses"][method]}
        assert sorted(val) == sorted(test) == [0, 1, 2, 3]
        means = {r: sum(v.values()) / len(v) for r, v in val.items()}
        chosen = metrics["selected_round"][method]
        assert means[chosen] == min(means.values())
        assert metrics["test"][method] == test[chosen] and set(test[chosen]) == clients
        assert math.isclose(metrics["mean_test"][method], sum(test[chosen].values()) / len(clients))
    assert metrics["test"]["fedavg"] != metrics["test"]["fedavg_ft"] or metrics["selected_round"]["fedavg"] == 0


def test_forgetting_a_client_scrubs_it_from_every_new_field(metrics):
    gone = sorted(metrics["base"])[0]
    scrubbed = metrics_without_client(metrics, gone)
    assert gone not in json.dumps(scrubbed)
    for method in METHODS:
        assert set(scrubbed["test"][method]) == set(metrics["base"]) - {gone}
        remaining = scrubbed["test"][method]
        assert math.isclose(scrubbed["mean_test"][method], sum(remaining.values()) / len(remaining))
