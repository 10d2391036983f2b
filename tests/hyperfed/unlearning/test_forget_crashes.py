"""Crash injection: a forget killed at any file operation, then retried, ends as a clean one.

A "kill" is a BaseException raised at the k-th call of the operations that change files —
``os.replace``, ``os.rename``, ``os.link``, ``os.unlink``, ``os.rmdir``, ``os.fsync``,
``shutil.rmtree`` and ``atomic_write_bytes`` — so it lands inside every folder swap (between
its renames, inside the deletion of the old version) and inside every file write (after
the bytes, before the rename). From the kill on, every such call raises again, as in a dead
process: no cleanup handler gets to tidy up. The retry (``forget_client`` again or
``recover_pending_forget``, i.e. ``hyperfed forget --resume``) must then leave exactly what a
forget that was never interrupted leaves: no byte of the client's embedding in any file, no
checkpoint or optimizer file lost, no leftover, and an audit that passes.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import pytest
import torch
from test_forget import CONFIG  # the tiny recorded run of the forget tests

from hyperfed.experiment import run_experiment
from hyperfed.ledger import Ledger
from hyperfed.rundir import OPTIMIZER_FILE, RunDirectory
from hyperfed.rundir.audit import audit_run
from hyperfed.rundir.fingerprints import embedding_bytes
from hyperfed.unlearning.forget import JOURNAL, forget_client, recover_pending_forget
from hypernet.atomic import is_leftover
from hypernet.io import read_meta

_OS_CALLS = ("replace", "rename", "link", "unlink", "rmdir", "fsync")
_WRITERS = ("hypernet.io", "hyperfed.rundir.layout", "hyperfed.ledger.salts", "hyperfed.experiment")


class Killed(BaseException):
    """The process "died" here (a BaseException: no ``except Exception`` catches it)."""


class Injector:
    """Counts the calls of the file operations and kills the forget at call ``kill_at``."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at = kill_at
        self.calls = 0
        self.dead = False
        self.where = ""

    def wrap(self, name: str, fn):
        def wrapper(*args, **kwargs):
            self.calls += 1
            if self.dead or self.calls == self.kill_at:
                if not self.dead:
                    self.where = f"{name}{tuple(str(a) for a in args[:2])}"
                self.dead = True
                raise Killed(self.where)
            return fn(*args, **kwargs)

        return wrapper

    def install(self, mp: pytest.MonkeyPatch) -> None:
        import importlib

        import hypernet.atomic

        for name in _OS_CALLS:
            mp.setattr(os, name, self.wrap(f"os.{name}", getattr(os, name)))
        mp.setattr(shutil, "rmtree", self.wrap("shutil.rmtree", shutil.rmtree))
        writer = self.wrap("atomic_write_bytes", hypernet.atomic.atomic_write_bytes)
        mp.setattr(hypernet.atomic, "atomic_write_bytes", writer)
        for module in _WRITERS:
            mod = importlib.import_module(module)
            if hasattr(mod, "atomic_write_bytes"):
                mp.setattr(mod, "atomic_write_bytes", writer)
        # atomic_write_text looks atomic_write_bytes up in its module at call time


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYPERFED_CACHE", str(tmp_path_factory.mktemp("cache")))
        root = tmp_path_factory.mktemp("run") / "run"
        run_experiment(root, CONFIG)
        yield root


def _victim(rd: RunDirectory) -> str:
    return read_meta(rd.checkpoint_dir(4))["client_ids"][1]


def _embeddings(rd: RunDirectory, client_id: str) -> list[bytes]:
    out = []
    for r in rd.checkpoint_rounds():
        hn = rd.load_checkpoint(r)
        if client_id in hn.clients:
            out.append(embedding_bytes(hn.clients.parameter(client_id).detach()))
    return out


def _state(rd: RunDirectory) -> dict:
    """What a finished forget leaves: file names (the ledger's own files aside), the latest
    checkpoint's tensors, every optimizer file's tensors, and the ledger's forget events."""
    files = sorted(
        str(p.relative_to(rd.root))
        for p in rd.root.rglob("*")
        if p.is_file() and not p.name.startswith(("ledger.db", "outbox.db"))
    )
    optimizers = {r: dict(_load(rd.checkpoint_dir(r) / OPTIMIZER_FILE)) for r in rd.checkpoint_rounds()}
    with Ledger.from_url(str(rd.ledger_path)) as ledger:
        events = [(e.client_id, e.mode, e.weights_hash, e.adapters_root) for e in ledger.forget_events()]
    return {"files": files, "ckpt": rd.load_checkpoint(4).state_dict(), "optimizers": optimizers, "events": events}


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path)


def _same(a: dict, b: dict) -> list[str]:
    problems = []
    if a["files"] != b["files"]:
        problems.append(f"files differ: {sorted(set(a['files']) ^ set(b['files']))}")
    if a["events"] != b["events"]:
        problems.append("ledger forget events differ")
    if set(a["ckpt"]) != set(b["ckpt"]) or not all(torch.equal(a["ckpt"][k], b["ckpt"][k]) for k in a["ckpt"]):
        problems.append("latest checkpoint differs")
    for r, state in a["optimizers"].items():
        other = b["optimizers"].get(r, {})
        if set(state) != set(other) or not all(torch.equal(state[k], other[k]) for k in state):
            problems.append(f"optimizer of round {r} differs")
    return problems


def _clean(recorded: Path, root: Path, mode: str) -> tuple[RunDirectory, dict, int]:
    """A copy of the run forgotten without interruption, its state and the calls it took."""
    rd = RunDirectory(root)
    shutil.copytree(recorded, rd.root)
    counter = Injector()
    victim = _victim(rd)
    with pytest.MonkeyPatch.context() as mp:
        counter.install(mp)
        forget_client(rd.root, victim, mode)
    return rd, _state(rd), counter.calls


@pytest.fixture(scope="module")
def clean(recorded, tmp_path_factory):
    return _clean(recorded, tmp_path_factory.mktemp("clean") / "run", "delete")


def _kill(root: Path, victim: str, mode: str, kill_at: int, attempt) -> str:
    injector = Injector(kill_at)
    with pytest.MonkeyPatch.context() as mp:
        injector.install(mp)
        try:
            attempt()
        except Killed:
            return injector.where
    return ""  # the attempt needed fewer calls: it finished


def _kill_and_retry(
    recorded: Path, root: Path, kill_at: int, retry_with_resume: bool, mode: str = "delete", then_kill_at: int = 0
) -> tuple[RunDirectory, str]:
    shutil.copytree(recorded, root)
    rd = RunDirectory(root)
    victim = _victim(rd)
    where = _kill(root, victim, mode, kill_at, lambda: forget_client(rd.root, victim, mode))
    assert where, f"no kill at call {kill_at}"
    if then_kill_at:  # the retry itself (recovery under the lock, then the roll forward) killed too
        where += " + " + (_kill(root, victim, mode, then_kill_at, lambda: forget_client(rd.root, victim, mode)) or "-")
    if retry_with_resume and (rd.root / JOURNAL).exists():
        assert recover_pending_forget(rd.root) is not None
    else:
        forget_client(rd.root, victim, mode)
    return rd, where


def _check_after_retry(rd: RunDirectory, embeddings: list[bytes], clean_state: dict, where: str) -> None:
    context = f"killed at {where}"
    assert not (rd.root / JOURNAL).exists(), context
    leftovers = [p for p in rd.root.rglob("*") if is_leftover(p)]
    assert not leftovers, (context, leftovers)
    for path in rd.root.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert not any(emb in blob for emb in embeddings), (context, path)
    assert rd.checkpoint_rounds()[:: len(rd.checkpoint_rounds()) - 1] == [0, 4], context  # exact drops 1..3 (_same)
    for r in rd.checkpoint_rounds():
        assert (rd.checkpoint_dir(r) / OPTIMIZER_FILE).is_file(), (context, r)
    problems = _same(clean_state, _state(rd))
    assert not problems, (context, problems)
    report = audit_run(rd.root)
    assert report.ok, (context, [f.message for f in report.failures()])


def _kill_points(total: int, count: int, seed: int) -> list[int]:
    """``count`` distinct call numbers in 1..total: the first and last few, the rest drawn."""
    if count >= total:
        return list(range(1, total + 1))
    rng = random.Random(seed)
    edges = {1, 2, 3, total - 1, total}
    return sorted(edges | set(rng.sample(range(4, total - 1), k=count - len(edges))))


def _run_points(recorded, clean, tmp_path, count: int, seed: int) -> dict[str, int]:
    _, clean_state, total = clean
    embeddings = _embeddings(RunDirectory(recorded), _victim(RunDirectory(recorded)))
    assert embeddings
    kinds: dict[str, int] = {}
    points = _kill_points(total, count, seed)
    for i, kill_at in enumerate(points):
        rd, where = _kill_and_retry(recorded, tmp_path / f"run-{kill_at}", kill_at, retry_with_resume=i % 2 == 0)
        _check_after_retry(rd, embeddings, clean_state, where)
        in_swap = ".old" in where or (
            "os.replace" in where and "hypernet.safetensors" not in where and ".tmp" in where and "json" not in where
        )
        kind = where.split("(")[0] + (" in a folder swap" if in_swap else "")
        kinds[kind] = kinds.get(kind, 0) + 1
        shutil.rmtree(rd.root)
    assert sum(kinds.values()) == len(points)
    print(f"\n{len(points)} kills out of {total} file operations of a forget, each recovered: {kinds}")
    return kinds


def test_a_forget_killed_at_20_points_then_retried_is_a_clean_forget(recorded, clean, tmp_path):
    kinds = _run_points(recorded, clean, tmp_path, count=20, seed=0)
    assert sum(kinds.values()) == 20 and len(kinds) >= 3  # 20 kills, spread over kinds of operation


@pytest.mark.slow
def test_a_forget_killed_at_every_file_operation_then_retried_is_a_clean_forget(recorded, clean, tmp_path):
    """Every one of the forget's file operations (about 150 on the tiny run) as a kill point."""
    kinds = _run_points(recorded, clean, tmp_path, count=10**6, seed=0)
    assert sum(kinds.values()) >= 100
    assert any("folder swap" in kind for kind in kinds)


@pytest.mark.slow
def test_a_kill_during_the_retry_of_a_killed_forget_is_recovered_too(recorded, clean, tmp_path):
    _, clean_state, total = clean
    embeddings = _embeddings(RunDirectory(recorded), _victim(RunDirectory(recorded)))
    rng = random.Random(7)
    for i in range(12):
        first, second = rng.randint(1, total), rng.randint(1, 40)
        rd, where = _kill_and_retry(recorded, tmp_path / f"run-{i}", first, i % 2 == 0, then_kill_at=second)
        _check_after_retry(rd, embeddings, clean_state, where)
        shutil.rmtree(rd.root)


@pytest.mark.slow
def test_an_exact_forget_killed_at_random_points_then_retried_is_a_clean_one(recorded, tmp_path):
    _, clean_state, total = _clean(recorded, tmp_path / "clean", "exact")
    embeddings = _embeddings(RunDirectory(recorded), _victim(RunDirectory(recorded)))
    for i, kill_at in enumerate(_kill_points(total, 10, seed=3)):
        rd, where = _kill_and_retry(recorded, tmp_path / f"run-{kill_at}", kill_at, i % 2 == 0, mode="exact")
        _check_after_retry(rd, embeddings, clean_state, where)
        shutil.rmtree(rd.root)
