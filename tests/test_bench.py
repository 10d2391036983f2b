"""Every benchmark runs end to end (tiny settings) and BENCHMARKS.md is generated from its JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_run_all_quick_writes_every_json_and_the_report(tmp_path):
    env = {"HYPERFED_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [
            sys.executable,
            "bench/run_all.py",
            "--quick",
            "--results",
            str(tmp_path / "results"),
            "--out",
            str(tmp_path / "BENCHMARKS.md"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from bench.run_all import BENCHES

    assert {"personalisation_sweep", "real_llm"} <= set(BENCHES)
    for name in BENCHES:
        assert json.loads((tmp_path / "results" / f"{name}.json").read_text())
    profile = json.loads((tmp_path / "results" / "round_profile.json").read_text())
    phases = {row["phase"]: row for row in profile["phases"]}
    for phase in ("generate", "train", "aggregate", "record/adapters", "record/checkpoint", "evaluate/client", "total"):
        assert {"hyperlora_ms", "hyperlora_spread_ms", "fedavg_ms", "fedavg_spread_ms", "ratio"} <= set(phases[phase])
    assert phases["total"]["ratio"] > 0 and profile["setup"]["repeats"] >= 3
    assert (
        profile["fsyncs_per_round"]["hyperlora"] > 0 == profile["fsyncs_per_round"]["fedavg"]
    )  # only HyperLoRA records
    report = (tmp_path / "BENCHMARKS.md").read_text()
    for heading in (
        "## Hypernetwork",
        "## Federation",
        "## Personalisation",
        "## Personalisation by data size",
        "## Where a round",
        "## Unlearning",
        "## Shared-weight policies",
        "## Ledger",
        "## Real LLM",
        "Machine:",
    ):
        assert heading in report


@pytest.mark.slow
def test_personalisation_quick_chooses_on_val_and_reports_test_with_seeds(tmp_path):
    out = tmp_path / "personalisation.json"
    env = {
        "HYPERFED_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
    }
    methods = ["hyperlora", "local", "fedavg_ft"]
    cmd = [sys.executable, "bench/personalisation.py", "--quick", "--out", str(out), "--methods", *methods]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Mean test loss at the selected round" in proc.stdout
    result = json.loads(out.read_text())
    assert result["setup"]["seeds"] == [0, 1] and result["setup"]["client_steps"] > 0
    runs = result["runs"]
    assert {r["method"] for r in runs} == set(methods)
    assert len([r for r in runs if r["method"] == "hyperlora"]) == 4 * 2  # 2 local × 2 server lrs × 2 seeds
    for row in result["table"][:-1]:  # the chosen setting has the lowest mean val over seeds …
        method = next(
            m
            for m in methods
            if row["method"] == {"hyperlora": "HyperLoRA", "local": "local-only", "fedavg_ft": "FedAvg-LoRA+FT"}[m]
        )
        by_setting: dict[str, list[float]] = {}
        for r in runs:
            if r["method"] == method:
                by_setting.setdefault(r["setting"], []).append(r["mean_val"])
        best = min(by_setting, key=lambda s: sum(by_setting[s]) / len(by_setting[s]))
        assert row["setting"] == best and row["seeds"] == 2
        tests = [r["mean_test"] for r in runs if r["method"] == method and r["setting"] == best]
        assert row["test_mean"] == pytest.approx(sum(tests) / 2) and row["test_std"] >= 0  # … reported on test
    assert sum(row.get("clients_won", 0) for row in result["table"]) == len(result["per_client"])


def test_unlearning_quick_efficacy_writes_excess_removed_both_attacks_and_the_frontier(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERFED_CACHE", str(tmp_path / "cache"))
    from bench.unlearning import main

    out = tmp_path / "unlearning.json"
    result = main(["--quick", "--no-latency", "--out", str(out)])
    saved = json.loads(out.read_text())
    rows = {r["system"]: r for r in saved["efficacy"]}
    for system in ("after delete", "after exact", "attack on delete", "strong attack on delete"):
        assert rows[system]["excess_removed"] == "n/a" or isinstance(rows[system]["excess_removed"], float)
    assert rows["base model"]["excess_removed"] == "" and "strong attack on retrain" in rows
    assert saved["guarantee"]["policy"] == "shared"
    assert {p["system"] for p in saved["frontier"]} == {"base", "before", "delete", "exact", "gold"}
    assert (tmp_path / "unlearning_frontier.png").read_bytes()[:4] == b"\x89PNG"
    assert result["efficacy"] == saved["efficacy"]
    late = saved["late_exact"]  # the latest joiner forgotten exactly: only its rounds replayed
    assert late["replayed_rounds"] == late["rounds"] - late["victim_first_round"] + 1 < late["rounds"]
    assert late["exact_forget_s"] > 0 and late["retrain_s"] > 0


def test_personalisation_sweep_quick_runs_every_cell_and_reports_each_methods_test_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERFED_CACHE", str(tmp_path / "cache"))
    from bench.personalisation_sweep import CELLS, main

    out = tmp_path / "sweep.json"
    assert main(["--quick", "--seeds", "0", "--methods", "hyperlora", "local", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["complete"] and [row["cell"] for row in result["summary"]] == [c[0] for c in CELLS]
    for name, cell in result["cells"].items():
        domains = {row["client"].split("/")[0] for row in cell["per_client"]}
        assert domains == ({"code"} if name.endswith("1domain") else set(next(c[2] for c in CELLS if c[0] == name)))
        table = {r["method"]: r for r in cell["table"]}
        assert set(table) == {"HyperLoRA", "local-only", "base model"}
        row = next(r for r in result["summary"] if r["cell"] == name)
        assert row["best"] == min(("HyperLoRA", "local-only"), key=lambda m: table[m]["test_mean"])
        assert row["HyperLoRA"] == f"{table['HyperLoRA']['test_mean']:.4f}"  # one seed: no ± std
    assert Path(result["plot"]).read_bytes()[:4] == b"\x89PNG"
    # a part of the sweep saves its cells only; --report merges what is there
    part = tmp_path / "part.json"
    assert main(["--quick", "--seeds", "0", "--methods", "local", "--cells", "1", "--out", str(part)]) == 0
    assert not part.exists() and (tmp_path / "part" / f"{CELLS[1][0]}.json").is_file()
    assert main(["--report", "--out", str(part)]) == 0
    merged = json.loads(part.read_text())
    assert not merged["complete"] and [r["cell"] for r in merged["summary"]] == [CELLS[1][0]]
