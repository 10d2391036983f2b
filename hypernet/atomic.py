"""Crash-safe writes: a reader sees the old file or folder or the new one, never a mix.

Files are written to a temporary name beside the target (``.<name>.<random>.tmp``), fsynced
and renamed over it. A folder is built beside its target as ``.<name>.new``, then swapped
in with two renames (the old version parks at ``.<name>.old`` and is deleted).

A process killed mid-way leaves one of those names behind. :func:`recover_directory`
settles the swap of one folder (roll forward if the new folder was complete, else keep the
old one) and deletes every leftover — the old version's bytes included; :func:`recover_tree`
does it for everything under a root. :func:`atomic_directory` recovers its own target
before swapping it, and a run directory is recovered each time a writer takes its lock
(``hyperfed.rundir.lock``). Recovery writes, so it is only for a process that may write.
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

_NEW, _OLD = ".new", ".old"
# A temp file of atomic_write_bytes, or a temp folder of an older atomic_directory (mkdtemp).
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


def _parked(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}{kind}")


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

    ``path`` never holds a half-filled directory, and a crash at any point leaves either
    the old or the new version at ``path`` plus a leftover that :func:`recover_directory`
    settles — this function calls it first, so the next swap of ``path`` finishes or
    rolls back an interrupted one. The steps: fill and fsync ``.<name>.new``; rename
    ``path`` to ``.<name>.old``; rename ``.<name>.new`` to ``path``; delete ``.<name>.old``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)
    new, old = _parked(path, _NEW), _parked(path, _OLD)
    new.mkdir()
    try:
        fill(new)
        _fsync_tree(new)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    # From here ``new`` is complete: a crash rolls forward (recover_directory).
    if path.exists():
        os.replace(path, old)
        fsync_dir(path.parent)
    os.replace(new, path)
    fsync_dir(path.parent)
    if old.exists():
        shutil.rmtree(old)
        fsync_dir(path.parent)


def recover_directory(path: str | os.PathLike[str]) -> list[Path]:
    """Settle an interrupted :func:`atomic_directory` swap of ``path``; return what was removed.

    * ``path`` missing, ``.<name>.new`` present: the crash came after the new folder was
      complete and the old one was parked — roll forward (rename ``.new`` to ``path``).
    * ``path`` missing, only ``.<name>.old``: put the old folder back.
    * then delete every ``.new`` / ``.old`` left beside ``path``: with ``path`` present
      a ``.new`` is an unfinished fill (roll back) and an ``.old`` a replaced version.
    """
    path = Path(path)
    new, old = _parked(path, _NEW), _parked(path, _OLD)
    if not path.exists():
        if new.is_dir():
            os.replace(new, path)
            log.warning("finished an interrupted swap of %s (the new version was complete)", path)
        elif old.is_dir():
            os.replace(old, path)
            log.warning("restored %s from an interrupted swap", path)
    removed = []
    for leftover in (new, old):
        if leftover.exists() or leftover.is_symlink():
            _remove(leftover)
            removed.append(leftover)
    if removed:
        fsync_dir(path.parent)
    return removed


def is_leftover(path: Path) -> bool:
    """Whether ``path`` is a name only an interrupted atomic write or swap leaves behind."""
    name = path.name
    return bool(_TMP.match(name)) or (name.startswith(".") and name.endswith((_NEW, _OLD)) and len(name) > 5)


def recover_tree(root: str | os.PathLike[str]) -> list[Path]:
    """:func:`recover_directory` for every interrupted swap under ``root``, and delete every
    temporary file of :func:`atomic_write_bytes`; return the paths removed (or settled)."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed: list[Path] = []
    targets: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in (*dirnames, *filenames):
            entry = here / name
            if not is_leftover(entry):
                continue
            if name.endswith((_NEW, _OLD)) and not _TMP.match(name):
                targets.add(here / name[1 : -len(_NEW)])  # .new and .old have the same length
            else:
                _remove(entry)
                removed.append(entry)
        dirnames[:] = [d for d in dirnames if not is_leftover(here / d)]  # not into what goes
    for target in sorted(targets):
        if not target.exists() and not _parked(target, _NEW).exists() and not _parked(target, _OLD).exists():
            continue
        removed.extend(recover_directory(target))
    if removed:
        log.warning("removed %d leftovers of interrupted writes under %s", len(removed), root)
    return removed
