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
from hyperfed.rundir import RunDirectory, client_file_name, load_optimizer_file
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


def _gold(run: RunDirectory, without: set[str]) -> dict[str, torch.Tensor]:
    config, corpus, base = load_experiment(run)
    fed = replace(config.federation, method="hyperlora")
    model = add_lora(copy.deepcopy(base), rank=fed.lora_rank, seed=fed.seed)
    gold = make_server("hyperlora", model, fed)
    run_rounds(gold, model, {c: d for c, d in corpus.clients.items() if c not in without}, fed)
    return gold.hypernet.state_dict()


def test_exact_mode_removes_what_learned_from_the_client_and_a_second_exact_forget_stays_exact(run):
    from hyperfed.rundir.audit import audit_run

    ids = read_meta(run.checkpoint_dir(0))["client_ids"]
    first = {c: next(r for r in range(1, 5) if c in poisson_sample(1, r, ids, 0.6)) for c in ids}
    victim = min(ids, key=lambda c: (first[c], c))  # the earliest joiner: the most to remove
    forget_client(run.root, victim, "exact")
    f = first[victim]
    # checkpoints f..3 had its updates, adapters of rounds f+1..4 came from them: all gone
    assert run.checkpoint_rounds() == [r for r in range(5) if r < f or r == 4]
    assert run.adapter_rounds() == [r for r in range(1, 5) if r <= f]
    report = audit_run(run.root)
    assert report.ok, [x.message for x in report.failures()]
    removed = [x for x in report.findings if x.status == "forgotten" and "exact forget" in x.message]
    assert f < 4 and {x.check for x in removed} == {"checkpoint", "adapter"}
    # the next exact forget rolls back to the latest checkpoint left before its first round
    second = max((c for c in ids if c != victim), key=lambda c: (first[c], c))
    result = forget_client(run.root, second, "exact")
    assert result.replayed_rounds[0] == min(first[second], f) and result.replayed_rounds[-1] == 4
    gold, exact = _gold(run, {victim, second}), run.load_checkpoint(4).state_dict()
    assert set(gold) == set(exact) and all(torch.equal(gold[k], exact[k]) for k in gold)  # bit for bit
    assert audit_run(run.root).ok


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


#: a forget in a child process that dies (exit code 9) right after the purge_adapters step
_KILLED_AT_PURGE_ADAPTERS = """
import os
from hyperfed.unlearning.forget import forget_client
def die(step):
    if step == "purge_adapters":
        os._exit(9)
forget_client({root!r}, {victim!r}, "delete", after_step=die)
"""


def test_process_killed_mid_forget_is_completed_by_the_next_call(run):
    victim = read_meta(run.checkpoint_dir(4))["client_ids"][3]
    code = _KILLED_AT_PURGE_ADAPTERS.format(root=str(run.root), victim=victim)
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


# ------------------------------------------------------------------- issue 10: safety
def _unsampled_victim(rd: RunDirectory) -> tuple[str, list[int]]:
    """A client and the checkpoints whose optimizer file holds none of its state (a round
    it was never sampled by: sample rate 0.6)."""
    ids = read_meta(rd.checkpoint_dir(0))["client_ids"]
    for cid in ids:
        without = [
            r
            for r in rd.checkpoint_rounds()
            if not any(k.startswith(f"client/{cid}/") for k in load_optimizer_file(rd.checkpoint_dir(r)))
        ]
        if without:
            return cid, without
    raise AssertionError("every client was sampled in round 1")


@pytest.mark.parametrize("mode", ["delete", "exact"])
def test_every_optimizer_file_survives_a_forget(run, mode):
    victim, rounds_without = _unsampled_victim(run)
    assert rounds_without  # e.g. round 0: nobody has optimizer state before the first round
    before = {r: load_optimizer_file(run.checkpoint_dir(r)) for r in run.checkpoint_rounds()}
    forget_client(run.root, victim, mode)
    for r in run.checkpoint_rounds():
        after = load_optimizer_file(run.checkpoint_dir(r))
        assert (run.checkpoint_dir(r) / "optimizer.safetensors").is_file()
        assert not any(k.startswith(f"client/{victim}/") for k in after)
        if mode == "delete" or r < 4:  # exact rewrites the latest round's state by replay
            kept = {k: v for k, v in before[r].items() if not k.startswith(f"client/{victim}/")}
            assert set(after) == set(kept) and all(torch.equal(after[k], kept[k]) for k in kept)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize(
    "damage",
    ["truncate weights", "weights missing", "bad optimizer", "bad metrics", "bad salts", "bad forget log"],
)
def test_a_damaged_file_stops_the_forget_before_anything_changes(run, damage):
    from hypernet.errors import CorruptFileError

    target = {
        "truncate weights": run.checkpoint_dir(3) / "hypernet.safetensors",
        "weights missing": run.checkpoint_dir(2) / "hypernet.safetensors",
        "bad optimizer": run.checkpoint_dir(1) / "optimizer.safetensors",
        "bad metrics": run.metrics_path,
        "bad salts": run.salts_path,
        "bad forget log": run.root / "forgets.json",
    }[damage]
    if damage == "truncate weights":
        target.write_bytes(target.read_bytes()[:-100])
    elif damage == "weights missing":
        target.unlink()
    elif damage == "bad forget log":
        target.write_text('{"client_id": "x"}')  # an object, not the list of records
    else:
        target.write_bytes(b"\x00garbage")
    before = _snapshot(run.root)
    victim = read_meta(run.checkpoint_dir(4))["client_ids"][0]
    with pytest.raises(CorruptFileError, match=target.name):
        forget_client(run.root, victim, "delete")
    assert _snapshot(run.root) == before  # every file's bytes unchanged, no journal
    assert not (run.root / JOURNAL).exists()


def test_no_number_in_metrics_gives_the_forgotten_clients_losses_away(run):
    import json

    from hyperfed.rundir.audit import audit_run

    victim = read_meta(run.checkpoint_dir(4))["client_ids"][0]
    plot = run.plots_dir / "loss_curves.png"
    plot_before = plot.read_bytes()
    manifest = json.loads(run.manifest_path.read_text())
    assert all(set(v) == {"train_tokens", "val_tokens", "test_tokens"} for v in manifest.values())  # no content hash
    forget_client(run.root, victim, "delete")

    metrics = json.loads(run.metrics_path.read_text())
    remaining = sorted(metrics["base"])
    assert victim not in remaining and len(remaining) == 3
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    assert metrics["mean"]["base"] == pytest.approx(mean([metrics["base"][c] for c in remaining]), abs=0)
    for method, losses in metrics["final"].items():
        assert sorted(losses) == remaining
        assert metrics["mean"][method] == pytest.approx(mean(list(losses.values())), abs=0)
        for (r, value), (r2, per_client) in zip(
            metrics["curves"][method], metrics["curve_losses"][method], strict=True
        ):
            assert (
                r == r2 and sorted(per_client) == remaining and value == pytest.approx(mean(list(per_client.values())))
            )
        assert sorted(metrics["test"][method]) == remaining  # the early-stopping report, recomputed without it
        assert metrics["mean_test"][method] == pytest.approx(mean(list(metrics["test"][method].values())), abs=0)
    assert metrics["mean_test"]["base"] == pytest.approx(mean([metrics["base_test"][c] for c in remaining]), abs=0)
    assert plot.read_bytes() != plot_before and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # redrawn
    assert victim not in json.loads(run.manifest_path.read_text())
    # the id is named only where the forget must be recorded: its log, its folder, the ledger
    allowed = {"forgets.json", "ledger.db", "outbox.db"}
    forget_folder = run.forget_dir(victim)
    for path in run.root.rglob("*"):
        if path.is_file() and path.name not in allowed and forget_folder not in path.parents:
            assert victim.encode() not in path.read_bytes(), path
            assert client_file_name(victim).encode() not in path.read_bytes(), path
    assert audit_run(run.root).ok


@pytest.mark.parametrize(
    ("journal", "says"),
    [
        ("[1, 2]", "JSON list, not an object"),
        ("{not json", "not valid JSON"),
        ('{"client_id": "code/xml", "mode": "delete", "round": 4}', "misses 'done'"),
        ('{"client_id": "nobody", "mode": "delete", "round": 4, "done": []}', "never had"),
        ('{"client_id": "x", "mode": "delete", "round": 99, "done": []}', "no checkpoint"),
        ('{"client_id": "x", "mode": "shred", "round": 4, "done": []}', "mode 'shred'"),
    ],
)
def test_a_journal_that_cannot_complete_is_a_typed_error_naming_it(run, journal, says):
    from hyperfed.errors import ForgetJournalError

    (run.root / JOURNAL).write_text(journal)
    before = _snapshot(run.root)
    victim = read_meta(run.checkpoint_dir(4))["client_ids"][0]
    for attempt in (lambda: forget_client(run.root, victim, "delete"), lambda: recover_pending_forget(run.root)):
        with pytest.raises(ForgetJournalError, match=says) as caught:
            attempt()
        assert JOURNAL in str(caught.value) and "move it away" in str(caught.value)
    assert _snapshot(run.root) == before


def test_a_planted_journal_is_finished_only_on_request(run):
    from hyperfed.rundir.audit import audit_run

    victim = read_meta(run.checkpoint_dir(4))["client_ids"][0]
    (run.root / JOURNAL).write_text(f'{{"client_id": "{victim}", "mode": "delete", "round": 4, "done": []}}')
    audit_run(run.root)  # the audit reads; it does not finish the forget
    assert (run.root / JOURNAL).exists() and forgotten_clients(run.root) == []
    assert recover_pending_forget(run.root).client_id == victim  # hyperfed forget --resume
    assert forgotten_clients(run.root) == [victim] and recover_pending_forget(run.root) is None


def _kill_in_swap_code(root: Path, victim: str, kill_at: int) -> str:
    return f"""
import os, signal
from hyperfed.unlearning.forget import forget_client
real = os.replace
calls = [0]
def replace(src, dst, *a, **k):
    calls[0] += 1
    if calls[0] == {kill_at} and os.path.isdir(src):
        os.kill(os.getpid(), signal.SIGKILL)  # between the two renames of a folder swap
    return real(src, dst, *a, **k)
os.replace = replace
forget_client({str(root)!r}, {victim!r}, "delete")
print("not killed")
"""


def _swap_renames(run: RunDirectory, victim: str) -> list[int]:
    """Which os.replace calls of a forget are renames of a folder swap (counted on a copy)."""
    import hypernet.atomic

    probe = run.root.parent / "probe"
    shutil.copytree(run.root, probe)
    seen: list[str] = []
    real = os.replace

    def replace(src, dst, *a, **k):
        seen.append("swap" if os.path.isdir(src) else "file")
        return real(src, dst, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hypernet.atomic.os, "replace", replace)
        forget_client(probe, victim, "delete")
    shutil.rmtree(probe)
    return [i + 1 for i, s in enumerate(seen) if s == "swap"]


def test_a_process_killed_inside_a_folder_swap_leaves_no_old_bytes_after_the_retry(run):
    from hyperfed.rundir.audit import audit_run
    from hypernet.atomic import is_leftover

    victim = read_meta(run.checkpoint_dir(4))["client_ids"][2]
    embeddings = [embedding_bytes(read_checkpoint_embedding(run, r, victim)) for r in run.checkpoint_rounds()]
    swaps = _swap_renames(run, victim)
    assert len(swaps) >= 10  # two renames per checkpoint folder rewritten
    for kill_at in (swaps[0], swaps[1], swaps[len(swaps) // 2]):  # after "→ .old", after ".new →", later
        root = run.root.parent / f"killed-{kill_at}"
        shutil.copytree(run.root, root)
        code = _kill_in_swap_code(root, victim, kill_at)
        proc = subprocess.run([sys.executable, "-c", code], env={**os.environ}, capture_output=True, timeout=300)
        assert proc.returncode == -9, proc.stderr.decode()[-2000:]
        assert any(is_leftover(p) for p in root.rglob("*"))  # the kill left a half-done swap
        forget_client(root, victim, "delete")  # the retry takes the lock: recovery, then roll forward
        assert not any(is_leftover(p) for p in root.rglob("*"))
        assert RunDirectory(root).checkpoint_rounds() == [0, 1, 2, 3, 4]
        for path in root.rglob("*"):
            if path.is_file():
                assert not any(e in path.read_bytes() for e in embeddings), path
        assert audit_run(root).ok


def test_a_flower_runs_metrics_lose_the_client_and_the_means_that_held_it():
    from hyperfed.experiment import metrics_without_client

    metrics = {
        "method": "hyperlora",
        "clients": {"org/x": 1, "b": 2, "c": 3},
        "sampled": {"1": ["org/x", "b"], "2": ["b", "c"]},
        "rounds": [
            {
                "round": 1,
                "accepted": ["org/x", "b"],
                "rejected": {},
                "update_norms": {"org/x": 1.0, "b": 2.0},
                "train_loss": 3.0,
            },
            {"round": 2, "accepted": ["b", "c"], "rejected": {"org/x": "late"}, "update_norms": {}, "train_loss": 2.5},
        ],
        "eval_losses": {"2": {"org/x": 1.0, "b": 2.0, "c": 3.0}},
    }
    out = metrics_without_client(metrics, "org/x")
    assert "org/x" not in str(out)
    assert out["rounds"][0]["train_loss"] is None  # a mean over a and b: its parts are not kept
    assert out["rounds"][1]["train_loss"] == 2.5  # a did not train in round 2
    assert out["sampled"] == {"1": ["b"], "2": ["b", "c"]} and out["eval_losses"] == {"2": {"b": 2.0, "c": 3.0}}
    assert metrics["clients"] == {"org/x": 1, "b": 2, "c": 3}  # the input is left alone
