"""bench/dp_many_clients.py end to end on tiny settings: many sharded clients, ε from the
accountant, the forget measured against the gold standard."""

import json

import pytest

from bench.dp_many_clients import main
from bench.run_all import render_dp_many_clients
from hyperfed.federation.privacy import client_level_epsilon


@pytest.mark.slow
def test_the_quick_many_client_dp_bench_reports_epsilon_utility_and_the_forget(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERFED_CACHE", str(tmp_path / "cache"))
    out = main(["--quick", "--out", str(tmp_path / "dp.json")])
    assert out["clients"] == 8 * 4  # 8 sources × 4 shards
    assert out["guarantee"]["guarantee"] == "(ε, δ)-DP"
    assert out["guarantee"]["epsilon"] == pytest.approx(client_level_epsilon(1.25, 0.25, 2, 1e-5))
    assert set(out["mean_test_loss"]) == {"hyperlora", "local", "fedavg", "base"}
    systems = [r["system"] for r in out["unlearning"]]
    assert {"before forget", "after delete", "retrain (gold)", "strong attack on delete"} <= set(systems)
    assert json.loads((tmp_path / "dp.json").read_text())["clients"] == 32
    assert "ε = " in render_dp_many_clients(out)


def test_methods_option_and_a_utility_only_result_render():
    import argparse

    from bench.dp_many_clients import _methods

    assert _methods("hyperlora, local") == ("hyperlora", "local")
    with pytest.raises(argparse.ArgumentTypeError, match="methods must come from"):
        _methods("hyperlora,ditto")
    out = {
        "clients": 256,
        "settings": {"shards": 32, "rounds": 10, "sample_rate": 0.5, "noise": 1.5, "clip": 0.05, "dp_scope": "base"},
        "guarantee": {"epsilon": 6.44, "delta": 1e-5},
        "mean_test_loss": {"hyperlora": 1.47, "base": 1.50},
        "selected_round": {"hyperlora": 4},
    }
    text = render_dp_many_clients(out)
    assert '`dp_scope = "base"`' in text and "ε = 6.44" in text and "Forgetting" not in text
