"""Crash-safe writes: a reader sees the old file or folder or the new one, never a mix.

A file is written to a temporary name beside its target (``.<name>.<random>.tmp``), fsynced
and renamed over it. A folder is filled and fsynced under such a temporary name, then
swapped in with two renames: the old version parks at ``.<name>.old``, the new one takes
its name, the old one is deleted.

A process killed mid-way leaves one of those names behind: a ``.tmp`` (an unfinished write
or an unswapped fill: the target still holds the old version) or an ``.old`` (a replaced
version, or — if the target is missing — the only version). :func:`recover_directory`
settles one folder's swap: it puts a lone ``.old`` back (roll back) or deletes it, so the
old version's bytes never outlive a completed swap. :func:`recover_tree` does that for
every folder under a root and deletes every ``.tmp``. :func:`atomic_directory` settles its
own target first; a run directory is recovered as a whole each time a writer takes its
lock (``hyperfed.rundir.lock``) — ``.tmp`` names are deleted only there, where no other
writer can be filling one. Recovery writes, so it is only for a process that may write.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_directory",
    "fsync_dir",
    "recover_directory",
    "recover_tree",
    "is_leftover",
]

log = logging.getLogger(__name__)

_OLD = ".old"
# A temp file of atomic_write_bytes or a temp folder of atomic_directory (both mkstemp/mkdtemp).
_TMP = re.compile(r"^\..+\.tmp$")


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry so a rename inside it survives power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _parked(path: Path) -> Path:
    return path.with_name(f".{path.name}{_OLD}")


def _fsync_tree(folder: Path) -> None:
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(dirpath)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def atomic_directory(path: str | os.PathLike[str], fill: Callable[[Path], None]) -> None:
    """Build a directory with ``fill(tmp_dir)`` and swap it in place of ``path``.

    ``path`` never holds a half-filled directory, and a crash at any point leaves the old
    or the new version at ``path`` (or the old one parked at ``.<name>.old``) plus a
    leftover that :func:`recover_directory` / :func:`recover_tree` settle; this function
    settles an earlier interrupted swap of ``path`` first. The steps: fill and fsync
    ``.<name>.<random>.tmp``; rename ``path`` to ``.<name>.old``; rename the fill to
    ``path``; delete ``.<name>.old``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = _parked(path)
    try:
        fill(tmp)
        _fsync_tree(tmp)
        if path.exists():
            os.replace(path, old)
            fsync_dir(path.parent)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not path.exists():
            os.replace(old, path)  # roll back: the swap did not happen
        raise
    if old.exists():
        shutil.rmtree(old)
        fsync_dir(path.parent)


def recover_directory(path: str | os.PathLike[str]) -> list[Path]:
    """Settle an interrupted :func:`atomic_directory` swap of ``path``; return what was removed.

    ``path`` missing and ``.<name>.old`` present: the crash came between the two renames —
    put the old folder back (the new one, if complete, is a ``.tmp`` that
    :func:`recover_tree` deletes; the writer that was killed redoes its work). ``path``
    present: a ``.<name>.old`` beside it is a replaced version and is deleted.
    """
    path = Path(path)
    old = _parked(path)
    if not (old.exists() or old.is_symlink()):
        return []
    if not path.exists() and old.is_dir():
        os.replace(old, path)
        fsync_dir(path.parent)
        log.warning("restored %s from an interrupted swap", path)
        return []
    _remove(old)
    fsync_dir(path.parent)
    return [old]


def is_leftover(path: Path) -> bool:
    """Whether ``path`` is a name only an interrupted atomic write or swap leaves behind."""
    name = path.name
    return bool(_TMP.match(name)) or (name.startswith(".") and name.endswith(_OLD) and len(name) > len(_OLD) + 1)


def recover_tree(root: str | os.PathLike[str]) -> list[Path]:
    """Settle every interrupted write under ``root``: each ``.<name>.old`` folder is put back
    or deleted (:func:`recover_directory`) and every ``.tmp`` file or folder is deleted.

    Only for a process that holds the lock of ``root``: a ``.tmp`` may be a live writer's.
    Returns the paths removed.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    removed: list[Path] = []
    targets: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in (*dirnames, *filenames):
            entry = here / name
            if not is_leftover(entry):
                continue
            if _TMP.match(name):
                _remove(entry)
                removed.append(entry)
            else:
                targets.append(here / name[1 : -len(_OLD)])
        dirnames[:] = [d for d in dirnames if not is_leftover(here / d)]  # not into what goes
    for target in targets:
        removed.extend(recover_directory(target))
    if removed:
        log.warning("removed %d leftovers of interrupted writes under %s", len(removed), root)
    return removed
