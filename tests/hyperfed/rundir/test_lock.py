"""The run lock: one writer at a time, no audit during a write, recovery when a writer starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recorded_runs import CLIENTS, record_run

from hyperfed.cli import main
from hyperfed.errors import ForgottenClientError, RunBusyError
from hyperfed.rundir import RunDirectory
from hyperfed.rundir.audit import audit_run
from hyperfed.rundir.lock import lock_holder, read_view, run_lock
from hyperfed.unlearning.forget import forget_client, forgotten_clients


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("lock") / "run"
    record_run(root)
    with run_lock(root, "train"):  # as training does: the run has its lock file from the start
        pass
    return root


@pytest.fixture
def run(recorded, tmp_path) -> RunDirectory:
    shutil.copytree(recorded, tmp_path / "run")
    return RunDirectory(tmp_path / "run")


class PausedForget:
    """``forget_client`` in another process, paused inside its first step until released."""

    def __init__(self, root: Path, client_id: str, tmp: Path) -> None:
        self.paused, self.go = tmp / "paused", tmp / "go"
        code = f"""
import pathlib, time
from hyperfed.unlearning.forget import forget_client
def hold(step):
    if step == "model":
        pathlib.Path({str(self.paused)!r}).touch()
        while not pathlib.Path({str(self.go)!r}).exists():
            time.sleep(0.02)
forget_client({str(root)!r}, {client_id!r}, "delete", after_step=hold)
"""
        self.proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
        while not self.paused.exists():  # no wall-clock assertion: only a generous safety stop
            if self.proc.poll() is not None:
                raise AssertionError(self.proc.stderr.read().decode()[-2000:])
            time.sleep(0.02)

    def finish(self) -> int:
        self.go.touch()
        _, err = self.proc.communicate(timeout=300)
        assert self.proc.returncode == 0, err.decode()[-2000:]
        return self.proc.returncode


def test_a_second_forget_during_a_forget_gets_run_busy_and_changes_nothing(run, tmp_path):
    first = PausedForget(run.root, CLIENTS[0], tmp_path)
    with pytest.raises(RunBusyError, match=r"busy: `forget` \(pid \d+") as busy:
        forget_client(run.root, CLIENTS[1], "delete")
    assert "changed nothing" in str(busy.value)
    with pytest.raises(RunBusyError):  # the same client too: no false "unknown client"
        forget_client(run.root, CLIENTS[0], "delete")
    first.finish()
    assert forgotten_clients(run.root) == [CLIENTS[0]]
    with pytest.raises(ForgottenClientError):
        forget_client(run.root, CLIENTS[0], "delete")
    forget_client(run.root, CLIENTS[1], "delete")  # the loser's retry, once the lock is free
    assert forgotten_clients(run.root) == list(CLIENTS[:2])
    assert audit_run(run.root).ok


def test_an_audit_during_a_forget_is_refused_and_one_after_it_passes(run, tmp_path, capsys):
    paused = PausedForget(run.root, CLIENTS[2], tmp_path)
    with pytest.raises(RunBusyError, match="`forget`"), read_view(run.root):
        pass
    with pytest.raises(RunBusyError, match="`forget`"):  # the Python API refuses as well
        audit_run(run.root)
    assert main(["audit", str(run.root)]) == 2  # the CLI: a one-line error, no half-done forget seen
    err = capsys.readouterr().err
    assert err.startswith("error: run ") and "busy" in err and err.count("\n") == 1
    paused.finish()
    assert main(["audit", str(run.root)]) == 0
    assert "audit PASSED" in capsys.readouterr().out


def test_a_writer_waits_for_no_audit_and_audits_share_the_run(run):
    with read_view(run.root), read_view(run.root):  # two audits side by side
        with pytest.raises(RunBusyError, match="an audit is reading it"):
            forget_client(run.root, CLIENTS[0], "delete")
    forget_client(run.root, CLIENTS[0], "delete")


def test_the_lock_is_reentrant_in_one_thread_and_records_its_holder(run):
    with run_lock(run.root, "train"):
        with run_lock(run.root, "forget"):  # e.g. forget_and_verify around forget_client
            pass
        assert "`train`" in lock_holder(run.root) and str(os.getpid()) in lock_holder(run.root)
        with read_view(run.root):  # the writer reads its own writes
            pass
    with run_lock(run.root, "forget"):
        pass


def test_a_killed_writer_does_not_leave_the_run_locked(run):
    code = f"""
import os, signal
from hyperfed.rundir.lock import run_lock
with run_lock({str(run.root)!r}, "train"):
    os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -9
    with run_lock(run.root, "forget"):  # the kernel dropped the dead process's lock
        pass


def test_taking_the_lock_settles_leftovers_and_the_read_view_writes_nothing(run):
    ckpt = run.checkpoint_dir(1)
    parked = ckpt.with_name(f".{ckpt.name}.old")
    os.replace(ckpt, parked)  # a swap killed between its renames…
    (run.checkpoint_dir(2).with_name(".round-0002.k3j4.tmp")).mkdir()  # …and a fill that never finished
    tmp = run.root / ".metrics.json.abc123.tmp"
    tmp.write_text("half")
    before = sorted(str(p) for p in run.root.rglob("*"))
    with read_view(run.root):
        pass
    assert sorted(str(p) for p in run.root.rglob("*")) == before  # the audit's view changes nothing
    with run_lock(run.root, "forget"):
        names = {p.name for p in run.root.rglob("*")}
        assert ckpt.is_dir() and not parked.exists() and not tmp.exists() and ".round-0002.k3j4.tmp" not in names
    assert audit_run(run.root).ok


def test_a_read_view_of_a_run_never_locked_creates_no_lock_file(tmp_path):
    rd = RunDirectory(tmp_path)
    with read_view(rd):
        pass
    assert not rd.lock_path.exists()


def test_the_server_apps_recorded_run_takes_the_lock(run):
    import threading

    from hyperfed.config import RunConfig
    from hyperfed.flower.server_app import run_recorded

    config = RunConfig(run_dir=str(run.root))
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with run_lock(run.root, "train"):
            held.set()
            release.wait()

    thread = threading.Thread(target=writer)
    thread.start()
    held.wait()
    try:
        with pytest.raises(RunBusyError, match="`train`"):
            run_recorded(None, config)  # refused before it touches the grid or the run
    finally:
        release.set()
        thread.join()
