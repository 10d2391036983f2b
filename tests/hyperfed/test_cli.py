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


# ------------------------------------------------------------------- issue 10: safety
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny recorded HyperLoRA run made by the CLI; tests work on copies of it."""
    root = tmp_path_factory.mktemp("trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYPERFED_CACHE", str(root / "cache"))
        config = root / "tiny.toml"
        config.write_text(TINY.replace('methods = ["hyperlora", "fedavg", "local"]', 'methods = ["hyperlora"]'))
        assert main(["train", str(config), "--out", str(root / "run")]) == 0
    return root


@pytest.fixture
def run(trained, tmp_path):
    import shutil

    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path / "run"


def _one_line_error(capsys, code: int, argv: list[str], *says: str) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for text in says:
        assert text in err, err
    return err


def test_audit_never_finishes_a_forget_and_forget_resume_does(run, capsys):
    journal = run / "forget_journal.json"
    journal.write_text('{"client_id": "code/asyncio", "mode": "delete", "round": 2, "done": []}')
    main(["audit", str(run)])
    capsys.readouterr()
    assert journal.exists() and not (run / "forgets.json").exists()  # nothing was forgotten
    assert main(["forget", str(run), "code/email", "--resume"]) == 2  # not the pending one
    assert "pending forget is of 'code/asyncio'" in capsys.readouterr().err
    assert main(["forget", str(run), "--resume"]) == 0
    assert "forgot 'code/asyncio' (delete)" in capsys.readouterr().out
    assert not journal.exists()
    assert main(["forget", str(run), "--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert main(["audit", str(run)]) == 0


@pytest.mark.parametrize(
    ("journal", "says"),
    [
        ("[]", "JSON list"),
        ('{"client_id": "code/asyncio"}', "misses 'mode'"),
        ('{"client_id": "nobody", "mode": "delete", "round": 2, "done": []}', "never had"),
        ("{", "not valid JSON"),
    ],
)
def test_a_journal_that_cannot_complete_is_one_line_naming_it(run, capsys, journal, says):
    (run / "forget_journal.json").write_text(journal)
    for argv in (["forget", str(run), "--resume"], ["forget", str(run), "code/asyncio"]):
        _one_line_error(capsys, 2, argv, "forget_journal.json", says, "move it away")
    assert (run / "forget_journal.json").read_text() == journal  # left for the user to look at


def test_not_a_run_directory_is_said_so(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for path in ("/etc/hostname", str(tmp_path / "empty"), str(tmp_path / "missing")):
        _one_line_error(capsys, 2, ["audit", path], "not a run directory")
        _one_line_error(capsys, 2, ["forget", path, "code/asyncio"], "not a run directory")
    assert not (tmp_path / "empty" / ".lock").exists() and not (tmp_path / "missing").exists()


def _read_only(monkeypatch, but: str = "") -> None:
    import errno
    import os

    real = os.replace

    def refuse(src, dst, *args, **kwargs):
        if but and str(dst).endswith(but):
            return real(src, dst, *args, **kwargs)
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(os, "replace", refuse)  # every atomic write ends in os.replace


def test_a_read_only_run_directory_is_a_one_line_error(run, tmp_path, monkeypatch, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.replace('methods = ["hyperlora", "fedavg", "local"]', 'methods = ["hyperlora"]'))
    _read_only(monkeypatch)
    _one_line_error(capsys, 2, ["forget", str(run), "code/asyncio"], "Read-only file system")
    assert not (run / "forget_journal.json").exists()  # its commit point failed: nothing pending
    _one_line_error(capsys, 2, ["train", str(config), "--out", str(tmp_path / "new")], "Read-only file system")
    _one_line_error(capsys, 2, ["train", str(config), "--out", str(run), "--overwrite"], "Read-only file system")


def test_verbose_shows_the_traceback(tmp_path, capsys):
    assert main(["-v", "audit", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: ")


def test_a_disk_error_after_the_commit_point_says_how_to_resume(run, monkeypatch, capsys):
    _read_only(monkeypatch, but="forget_journal.json")  # the journal gets written, nothing else
    err = _one_line_error(capsys, 2, ["forget", str(run), "code/asyncio"], "Read-only file system", "--resume")
    assert "stopped" in err and (run / "forget_journal.json").exists()
    monkeypatch.undo()
    assert main(["forget", str(run), "--resume"]) == 0
    assert main(["audit", str(run)]) == 0
