"""forget_client on a real (tiny) recorded run: erasure, exactness, errors, crash safety."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hyperfed.base_model import BaseModelConfig
from hyperfed.config import EvaluationConfig, RunConfig
from hyperfed.data.corpus import CorpusConfig
from hyperfed.errors import ForgottenClientError, UnknownClientError
from hyperfed.experiment import run_experiment
from hyperfed.federation import FederationConfig, make_server, poisson_sample, run_rounds
from hyperfed.ledger import Ledger
from hyperfed.rundir import RunDirectory, load_optimizer_file
from hyperfed.rundir.fingerprints import embedding_bytes
from hyperfed.unlearning.forget import FORGET_STEPS, JOURNAL, forget_client, forgotten_clients, recover_pending_forget
from hyperfed.unlearning.replay import load_experiment
from hypernet import LocalTrainConfig
from hypernet.base_models import add_lora
from hypernet.io import read_meta

CONFIG = RunConfig(
    federation=FederationConfig(
        rounds=4, sample_rate=0.6, local=LocalTrainConfig(steps=2, batch_size=2), lora_rank=2, seed=1
    ),
    corpus=CorpusConfig(domains=("code", "docs"), clients_per_domain=2, train_kib=1, val_kib=1, block_size=32),
    base_model=BaseModelConfig(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, steps=5, batch_size=2, block_size=32
    ),
    methods=("hyperlora",),
    evaluation=EvaluationConfig(every=4),
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYPERFED_CACHE", str(tmp_path_factory.mktemp("cache")))
        root = tmp_path_factory.mktemp("run") / "run"
        run_experiment(root, CONFIG)
        yield root


@pytest.fixture
def run(recorded, tmp_path):
    copy_root = tmp_path / "run"
    shutil.copytree(recorded, copy_root)
    return RunDirectory(copy_root)


def _late_client(rd: RunDirectory) -> tuple[str, int]:
    """A client whose first round is > 1 (so exact mode really rolls back), if any."""
    ids = read_meta(rd.checkpoint_dir(0))["client_ids"]
    for cid in ids:
        first = next(r for r in range(1, 5) if cid in poisson_sample(1, r, ids, 0.6))
        if first > 1:
            return cid, first
    return ids[0], 1


def _all_bytes(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def test_delete_removes_every_trace_and_keeps_other_adapters(run):
    victim = read_meta(run.checkpoint_dir(4))["client_ids"][0]
    before = run.load_checkpoint(4)
    embeddings = [read_checkpoint_embedding(run, r, victim) for r in run.checkpoint_rounds()]
    with torch.no_grad():
        others_before = before.generate_many([c for c in before.client_ids if c != victim])

    result = forget_client(run.root, victim, "delete")

    assert victim not in result.remaining_clients and len(result.remaining_clients) == 3
    for _, blob in _all_bytes(run.root):
        for emb in embeddings:
            assert embedding_bytes(emb) not in blob
    for r in run.checkpoint_rounds():
        assert victim not in read_meta(run.checkpoint_dir(r))["client_ids"]
        assert not any(k.startswith(f"client/{victim}/") for k in load_optimizer_file(run.checkpoint_dir(r)))
        assert not run.adapter_path(r, victim).exists()
    assert victim not in (run.salts_path.read_text())
    assert victim not in run.metrics_path.read_text()
    after = run.load_checkpoint(4)
    with torch.no_grad():
        for cid, adapter in after.generate_many(after.client_ids).items():
            assert all(torch.equal(adapter[k], others_before[cid][k]) for k in adapter)
    with Ledger.from_url(str(run.ledger_path)) as ledger:
        assert [e.client_id for e in ledger.forget_events()] == [victim]
    assert forgotten_clients(run.root) == [victim]


def read_checkpoint_embedding(rd: RunDirectory, round_: int, client_id: str) -> torch.Tensor:
    return rd.load_checkpoint(round_).clients.parameter(client_id).detach().clone()


def test_exact_mode_equals_retraining_without_the_client(run):
    victim, first = _late_client(run)
    result = forget_client(run.root, victim, "exact")
    assert result.first_round == first and result.replayed_rounds == list(range(first, 5))

    config, corpus, base = load_experiment(run)
    fed = replace(config.federation, method="hyperlora")
    clients = {c: d for c, d in corpus.clients.items() if c != victim}
    model = add_lora(copy.deepcopy(base), rank=fed.lora_rank, seed=fed.seed)
    gold = make_server("hyperlora", model, fed)
    run_rounds(gold, model, clients, fed)
    exact = run.load_checkpoint(4)
    gold_state, exact_state = gold.hypernet.state_dict(), exact.state_dict()
    assert set(gold_state) == set(exact_state)
    assert all(torch.equal(gold_state[k], exact_state[k]) for k in gold_state)  # bit for bit


def test_unknown_and_already_forgotten_clients_are_refused(run):
    with pytest.raises(UnknownClientError):
        forget_client(run.root, "nobody", "delete")
    victim = read_meta(run.checkpoint_dir(4))["client_ids"][1]
    forget_client(run.root, victim, "delete")
    with pytest.raises(ForgottenClientError):
        forget_client(run.root, victim, "delete")
    with pytest.raises(ForgottenClientError):
        forget_client(run.root, victim, "exact")


class Crash(Exception):
    pass


def _final_state(rd: RunDirectory) -> dict:
    ckpt = rd.load_checkpoint(4).state_dict()
    files = sorted(
        str(p.relative_to(rd.root))
        for p in rd.root.rglob("*")
        if p.is_file()
        and p.suffix != ".db"
        and "outbox" not in p.name
        and "-wal" not in p.name
        and "-shm" not in p.name
    )
    with Ledger.from_url(str(rd.ledger_path)) as ledger:
        events = [(e.client_id, e.mode, e.weights_hash, e.adapters_root) for e in ledger.forget_events()]
    return {"ckpt": ckpt, "files": files, "events": events}


@pytest.mark.parametrize("crash_after", FORGET_STEPS)
def test_crash_after_any_step_then_retry_completes(recorded, tmp_path, crash_after):
    clean = RunDirectory(tmp_path / "clean")
    shutil.copytree(recorded, clean.root)
    victim = read_meta(clean.checkpoint_dir(4))["client_ids"][2]
    forget_client(clean.root, victim, "delete")

    crashed = RunDirectory(tmp_path / "crashed")
    shutil.copytree(recorded, crashed.root)

    def boom(step: str) -> None:
        if step == crash_after:
            raise Crash(step)

    with pytest.raises(Crash):
        forget_client(crashed.root, victim, "delete", after_step=boom)
    assert (crashed.root / JOURNAL).exists()  # the forget is committed: it will roll forward
    if crash_after == FORGET_STEPS[-1]:
        forget_client(crashed.root, victim, "delete")  # a plain retry finishes it
    else:
        recover_pending_forget(crashed.root)
    assert not (crashed.root / JOURNAL).exists()
    a, b = _final_state(clean), _final_state(crashed)
    assert a["files"] == b["files"] and a["events"] == b["events"]
    assert all(torch.equal(a["ckpt"][k], b["ckpt"][k]) for k in a["ckpt"])


def test_process_killed_mid_forget_is_completed_by_the_next_call(run):
    victim = read_meta(run.checkpoint_dir(4))["client_ids"][3]
    code = f"""
import os
from hyperfed.unlearning.forget import forget_client
def die(step):
    if step == "purge_adapters":
        os._exit(9)
forget_client({str(run.root)!r}, {victim!r}, "delete", after_step=die)
"""
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ}, capture_output=True, timeout=300)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    assert (run.root / JOURNAL).exists()
    result = forget_client(run.root, victim, "delete")
    assert victim not in result.remaining_clients
    assert forgotten_clients(run.root) == [victim]


def test_audit_passes_after_each_mode_of_forget(run, tmp_path):
    from hyperfed.rundir.audit import audit_run

    victim, _ = _late_client(run)
    assert audit_run(run.root).ok
    forget_client(run.root, victim, "exact")
    report = audit_run(run.root)
    assert report.ok, [f.message for f in report.failures()]
    assert victim in report.forgotten


def test_audit_checks_the_adapters_regenerated_by_a_forget(run):
    from hyperfed.rundir.audit import audit_run

    victim = read_meta(run.checkpoint_dir(4))["client_ids"][0]
    forget_client(run.root, victim, "delete")
    report = audit_run(run.root)
    assert report.ok and any(f.check == "regenerated" and f.status == "match" for f in report.findings)
    victim_file = next((run.regenerated(victim).root / "adapters" / "round-0000").glob("*.safetensors"))
    blob = bytearray(victim_file.read_bytes())
    blob[-2] ^= 0x01
    victim_file.write_bytes(bytes(blob))
    report = audit_run(run.root)
    assert not report.ok
    bad = [f for f in report.failures() if f.check == "regenerated"]
    assert bad and victim_file.name in bad[0].culprit
