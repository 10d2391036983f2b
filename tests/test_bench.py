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


def test_personalisation_sweep_with_public_pretraining_runs_the_public_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERFED_CACHE", str(tmp_path / "cache"))
    from bench.personalisation import CHOSEN_PUBLIC
    from bench.personalisation_sweep import CELLS, main

    out = tmp_path / "public.json"
    argv = ["--quick", "--seeds", "0", "--methods", "hyperlora", "--cells", "0", "--out", str(out)]
    assert main([*argv, "--public-share", "0.5", "--public-pretrain-rounds", "2"]) == 0
    cell = json.loads((tmp_path / "public" / f"{CELLS[0][0]}.json").read_text())
    assert cell["setup"]["public_share"] == 0.5 and cell["setup"]["public_pretrain_rounds"] == 2
    assert "public_share=0.5" in cell["setup"]["corpus"]  # the corpus cuts its pseudo-clients from the withheld half
    server_lr = CHOSEN_PUBLIC["hyperlora"]["server_lr"][0]
    assert [r["setting"] for r in cell["runs"]] == [f"local_lr=0.003 server_lr={server_lr:g}"]
    assert main(["--report", "--out", str(out)]) == 0  # the report reads the setting from the cells
    assert json.loads(out.read_text())["setting"]["hyperlora"]["server_lr"] == [server_lr]


def test_personalisation_grid_point_sets_each_learning_rate_it_names():
    from bench.personalisation import base_config, configure

    base = base_config(quick=True, rounds=None)
    fed = configure(base, "hyperlora", {"local_lr": 1e-3, "server_lr": 3e-3, "embedding_lr": 1e-2}, 1).federation
    assert (fed.local.lr, fed.server.lr, fed.server.embedding_lr, fed.seed) == (1e-3, 3e-3, 1e-2, 1)
    fed = configure(base, "local", {"local_lr": 3e-3}, 0).federation
    assert fed.server.embedding_lr == base.federation.server.embedding_lr  # a point without it leaves it alone


def _part(runs: list[tuple[str, str, int, float, float]], **setup: object) -> dict:
    """A personalisation result holding ``runs`` as (method, setting, seed, val, test on both clients)."""
    return {
        "setup": {"rounds": 6, "corpus": "demo", "public_share": 0.5} | setup,
        "base_test": {"a": 2.0, "b": 2.0},
        "runs": [
            {"method": m, "setting": s, "seed": seed, "mean_val": val, "mean_test": test, "selected_round": 2}
            | {"test": {"a": test, "b": test}, "seconds": 1.0}
            for m, s, seed, val, test in runs
        ],
    }


def test_personalisation_merge_chooses_on_val_over_every_parts_grid_points(tmp_path):
    from bench.personalisation import main

    paths = [tmp_path / f"{name}.json" for name in ("lr1", "lr3", "local")]
    parts = [
        _part([("hyperlora", "lr=1", 0, 1.50, 1.61), ("hyperlora", "lr=1", 1, 1.52, 1.62)]),
        _part([("hyperlora", "lr=3", 0, 1.49, 1.60), ("hyperlora", "lr=3", 1, 1.51, 1.64)]),
        _part(
            [("local", "lr=3", 0, 1.55, 1.63), ("local", "lr=3", 1, 1.55, 1.63), ("hyperlora", "lr=1", 0, 1.50, 1.61)]
        ),
    ]
    for path, part in zip(paths, parts, strict=True):
        path.write_text(json.dumps(part))
    out = tmp_path / "merged.json"
    assert main(["--merge", *map(str, paths), "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert len(merged["runs"]) == 6  # the run both parts hold counts once
    assert merged["grid"] == {"hyperlora": ["lr=1", "lr=3"], "local": ["lr=3"]} and merged["setup"]["seeds"] == [0, 1]
    hyperlora = next(row for row in merged["table"] if row["method"] == "HyperLoRA")
    assert hyperlora["setting"] == "lr=3"  # lower mean val (1.50 < 1.51), although its test is worse …
    assert hyperlora["test_mean"] == pytest.approx(1.62)  # … and reported on test

    paths[2].write_text(json.dumps(_part([("local", "lr=3", 0, 1.55, 1.63)], public_share=0.0)))
    with pytest.raises(ValueError, match="public_share"):
        main(["--merge", *map(str, paths), "--out", str(out)])
    paths[2].write_text(json.dumps(_part([("hyperlora", "lr=1", 0, 1.50, 1.70)])))
    with pytest.raises(ValueError, match="differs from the same run"):
        main(["--merge", *map(str, paths), "--out", str(out)])
