import json

import pytest

from hyperfed.cli import main


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERFED_CACHE", str(tmp_path / "cache"))


TINY = """
methods = ["hyperlora", "fedavg", "local"]
[evaluation]
every = 1
[federation]
rounds = 2
lora_rank = 2
[federation.local]
steps = 2
batch_size = 4
[corpus]
domains = ["code", "docs"]
clients_per_domain = 2
train_kib = 2
val_kib = 1
block_size = 64
[base_model]
hidden_size = 32
num_layers = 1
num_heads = 2
num_kv_heads = 1
steps = 20
batch_size = 4
block_size = 64
"""


def test_train_from_config_writes_table_metrics_and_plot(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "HyperLoRA" in out and "FedAvg-LoRA" in out and "local-only" in out and "MEAN" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["final"]) == {"hyperlora", "fedavg", "local"}
    assert len(metrics["final"]["hyperlora"]) == 4
    assert [r for r, _ in metrics["curves"]["fedavg"]] == [0, 1, 2]
    png = (tmp_path / "run" / "plots" / "loss_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bad_config_is_a_clean_error(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[federation]\nrounds = 0\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "rounds" in capsys.readouterr().err
    config.write_text("[federaton]\n")
    assert main(["train", str(config)]) == 2


def test_audit_forget_audit_then_tamper(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.replace('methods = ["hyperlora", "fedavg", "local"]', 'methods = ["hyperlora"]'))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    assert main(["audit", str(run), "--json", str(tmp_path / "audit.json")]) == 0
    assert "audit PASSED" in capsys.readouterr().out
    assert json.loads((tmp_path / "audit.json").read_text())["ok"] is True

    assert main(["forget", str(run), "code/asyncio"]) == 0
    assert "forgot 'code/asyncio' (delete)" in capsys.readouterr().out
    assert main(["audit", str(run)]) == 0
    assert "code/asyncio" in capsys.readouterr().out  # listed as forgotten
    assert main(["forget", str(run), "code/asyncio"]) == 2  # forgetting is final
    assert "already forgotten" in capsys.readouterr().err

    adapter = next((run / "adapters" / "round-0002").glob("*.safetensors"))
    blob = bytearray(adapter.read_bytes())
    blob[-1] ^= 0x01
    adapter.write_bytes(bytes(blob))
    assert main(["audit", str(run)]) == 1
    out = capsys.readouterr().out
    assert "audit FAILED" in out and adapter.name in out


def test_a_directory_holding_a_run_is_not_reused_by_accident(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.replace('methods = ["hyperlora", "fedavg", "local"]', 'methods = ["hyperlora"]'))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    assert main(["forget", str(run), "code/asyncio"]) == 0
    capsys.readouterr()
    assert main(["train", str(config), "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", str(config), "--out", str(run), "--overwrite"]) == 0  # a fresh run, ids usable again
    assert main(["audit", str(run)]) == 0
