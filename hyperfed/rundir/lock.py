"""The run lock, ``RUN/.lock``: one writer at a time, and no reader while one writes.

Every command that writes a run (training, the ServerApp's recorded run, a forget, a
resumed forget) holds :func:`run_lock` — an exclusive ``flock`` taken with the
`filelock <https://py-filelock.readthedocs.io>`_ package — for as long as it writes. A
second writer does not wait: it gets :class:`~hyperfed.errors.RunBusyError` naming the
command that holds the lock (recorded in the lock file when it was taken). The kernel drops
the lock when its process dies, so a crash never leaves the run locked.

Taking the lock also settles what an interrupted writer left behind
(:func:`hypernet.atomic.recover_tree`: a half-done folder swap is finished or rolled back,
temporary files are deleted), so a writer always starts from whole files.

The audit reads under :func:`read_view`, a *shared* ``flock`` on the same file: audits run
side by side, but never while a writer holds the lock (it refuses with ``RunBusyError``
instead of reading a half-done forget), and a writer refuses while an audit reads. The
read view opens the lock file read-only and creates nothing; a run that has never been
written under a lock (no ``.lock`` file) is read without one.

A process may nest :func:`run_lock` (e.g. ``forget_and_verify`` around ``forget_client``):
the inner call joins the hold of the outer one in the same thread.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from hyperfed.errors import RunBusyError
from hyperfed.rundir.layout import LOCK_FILE, RunDirectory
from hypernet.atomic import recover_tree

try:
    import fcntl
except ImportError:  # pragma: no cover - not a POSIX system: the read view takes no lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["run_lock", "read_view", "lock_holder", "LOCK_FILE"]

log = logging.getLogger(__name__)


@dataclass
class _Hold:
    lock: FileLock
    thread: int
    depth: int


_holds: dict[Path, _Hold] = {}
_holds_guard = threading.Lock()


def _run_dir(run_dir: RunDirectory | str | os.PathLike) -> RunDirectory:
    return run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)


def lock_holder(run_dir: RunDirectory | str | os.PathLike) -> str:
    """Who took the run's lock last, as recorded in ``RUN/.lock`` (``""`` if unknown)."""
    rd = _run_dir(run_dir)
    try:
        info = json.loads(rd.lock_path.read_text())
    except (OSError, ValueError):
        return ""
    if not isinstance(info, dict):
        return ""
    get = info.get
    return f"`{get('command', '?')}` (pid {get('pid', '?')} on {get('host', '?')}, since {get('since', '?')})"


def _only_readers(path: Path) -> bool:
    """Whether the lock is held in shared mode only (audits), probed with a shared flock."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops the probe's own shared lock


def _busy(rd: RunDirectory, wanted: str) -> RunBusyError:
    if _only_readers(rd.lock_path):
        who = "an audit is reading it"
    else:
        holder = lock_holder(rd)
        who = f"{holder} is writing it" if holder else "another process is writing it"
    return RunBusyError(f"run {rd.root} is busy: {who}; {wanted} changed nothing — try again when it has finished")


@contextlib.contextmanager
def run_lock(
    run_dir: RunDirectory | str | os.PathLike, command: str, *, timeout: float = 0.0
) -> Iterator[RunDirectory]:
    """Hold the run's exclusive writer lock; yield the :class:`RunDirectory`.

    Parameters
    ----------
    run_dir
        An existing run directory (the lock file is created in it).
    command
        What is writing (e.g. ``"forget code/xml"``), recorded for the error another
        writer gets.
    timeout
        Seconds to wait for the lock (default: do not wait).

    Raises
    ------
    RunBusyError
        Another process writes or audits the run.
    """
    rd = _run_dir(run_dir)
    key = rd.root.resolve()
    me = threading.get_ident()
    with _holds_guard:
        hold = _holds.get(key)
        if hold is not None and hold.thread == me:
            hold.depth += 1
            nested = True
        else:
            nested = False
    if nested:
        try:
            yield rd
        finally:
            with _holds_guard:
                hold.depth -= 1  # type: ignore[union-attr]
        return
    if hold is not None:  # another thread of this process writes the run
        raise _busy(rd, command)

    def record(fd: int) -> None:
        info = {
            "command": command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)

    lock = FileLock(rd.lock_path, timeout=timeout, preserve_lock_file=True, on_acquired=record)
    try:
        lock.acquire()
    except Timeout:
        raise _busy(rd, command) from None
    try:
        with _holds_guard:
            _holds[key] = _Hold(lock, me, 1)
        recover_tree(rd.root)
        yield rd
    finally:
        with _holds_guard:
            _holds.pop(key, None)
        lock.release()


@contextlib.contextmanager
def read_view(run_dir: RunDirectory | str | os.PathLike) -> Iterator[RunDirectory]:
    """Hold a shared lock on the run while reading it (the audit); creates and writes nothing.

    Raises
    ------
    RunBusyError
        A writer holds the run's lock (a forget or training is under way).
    """
    rd = _run_dir(run_dir)
    with _holds_guard:
        hold = _holds.get(rd.root.resolve())
    if hold is not None and hold.thread == threading.get_ident():
        yield rd  # this thread writes the run: it reads its own writes
        return
    try:
        fd = os.open(rd.lock_path, os.O_RDONLY)
    except FileNotFoundError:
        fd = -1  # never written under a lock: nothing to share
    if fd < 0:
        yield rd
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                holder = lock_holder(rd) or "another process"
                raise RunBusyError(
                    f"run {rd.root} is busy: {holder} is writing it; audit it when that has finished "
                    "(an audit never reads a half-written run)"
                ) from None
        yield rd
    finally:
        os.close(fd)
