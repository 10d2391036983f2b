"""The run directory: every file a federated run leaves behind, in one documented layout.

::

    RUN/
      run.json                      the run's configuration (federation, corpus, base model)
      .lock                         the run lock (hyperfed.rundir.lock): who writes it now
      corpus_manifest.json          how much text each client has (token counts, no content hash)
      metrics.json                  per-round outcomes and per-client evaluation
      ledger.db, outbox.db          the embedded ledger and its durable outbox
      ledger_head.json              last block (number, hash) seen, to detect truncation
      secrets/salts.json            commitment salts (secret, never on-chain; deleted on forget)
      checkpoints/round-0003/       hypernetwork after round 3 (see hypernet.io) + optimizer state
      adapters/round-0003/<id>.safetensors   the adapter generated for each client in round 3
      forgets/<id>/                 a forget's report and the adapters it regenerated
      forgets/<id>/replay/, flower/ an exact forget's replay run by a deployment's ServerApp
                                    (its result, then removed; the ``flwr run`` files)
      plots/*.png

All writes are atomic (temp file + rename; a checkpoint folder is swapped as a whole, its
optimizer state with it), so a crash leaves the old or the new file, plus at most a
leftover (``.<name>.<random>.tmp``, ``.<name>.new``, ``.<name>.old``) that the next writer
settles when it takes the run lock (:func:`hypernet.atomic.recover_tree`). A completed
write leaves none; the names are not part of the layout.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from hyperfed.errors import NotARunError
from hypernet import HyperLoRA, TargetSpec, adapter_hash, load_hypernet, save_hypernet
from hypernet.atomic import atomic_write_bytes, atomic_write_text
from hypernet.errors import CorruptFileError

if TYPE_CHECKING:  # only for annotations: the trainer pulls peft, an audit needs neither
    from hypernet.trainer import HypernetTrainer

__all__ = ["RunDirectory", "client_file_name", "client_from_file_name", "load_optimizer_file", "LOCK_FILE"]

_ROUND_DIR = re.compile(r"^round-(\d{4,})$")
OPTIMIZER_FILE = "optimizer.safetensors"
LOCK_FILE = ".lock"


def client_file_name(client_id: str) -> str:
    """A file-name-safe, reversible form of a client id (``code/asyncio`` → ``code%2Fasyncio``)."""
    return quote(client_id, safe="")


def client_from_file_name(name: str) -> str:
    return unquote(name)


class RunDirectory:
    """Paths and atomic readers/writers for one run."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------------ paths
    @property
    def config_path(self) -> Path:
        return self.root / "run.json"

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_FILE

    def require_run(self) -> RunDirectory:
        """This run directory, checked to be one: an existing folder holding ``run.json``
        or checkpoints.

        Raises
        ------
        NotARunError
            Missing, not a folder, or a folder no run was written to.
        """
        what = "the folder `hyperfed train --out` (or a recorded Flower run) wrote"
        if not self.root.exists():
            raise NotARunError(f"{self.root} does not exist: not a run directory; pass {what}")
        if not self.root.is_dir():
            raise NotARunError(f"{self.root} is not a directory: not a run directory; pass {what}")
        if not self.config_path.is_file() and not (self.root / "checkpoints").is_dir():
            raise NotARunError(f"{self.root} holds no run.json and no checkpoints: not a run directory; pass {what}")
        return self

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def manifest_path(self) -> Path:
        return self.root / "corpus_manifest.json"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.db"

    @property
    def outbox_path(self) -> Path:
        return self.root / "outbox.db"

    @property
    def ledger_head_path(self) -> Path:
        return self.root / "ledger_head.json"

    @property
    def salts_path(self) -> Path:
        return self.root / "secrets" / "salts.json"

    @property
    def plots_dir(self) -> Path:
        return self.root / "plots"

    def checkpoint_dir(self, round_: int) -> Path:
        return self.root / "checkpoints" / f"round-{round_:04d}"

    def forget_dir(self, client_id: str) -> Path:
        """Where a forget of ``client_id`` keeps its report and regenerated adapters."""
        return self.root / "forgets" / client_file_name(client_id)

    def regenerated(self, client_id: str) -> RunDirectory:
        """The adapters regenerated when ``client_id`` was forgotten, laid out as round 0 of a
        run directory (``.adapter_path(0, other)``, ``.save_adapter(0, other, ...)``)."""
        return RunDirectory(self.forget_dir(client_id))

    def adapter_path(self, round_: int, client_id: str) -> Path:
        return self.root / "adapters" / f"round-{round_:04d}" / f"{client_file_name(client_id)}.safetensors"

    # ------------------------------------------------------------------- json
    def write_json(self, path: Path, data: Any) -> None:
        atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str))

    def read_json(self, path: Path, default: Any = None) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            if default is not None:
                return default
            raise CorruptFileError(f"{path} is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{path} is not valid JSON ({exc})") from None

    # ------------------------------------------------------------ checkpoints
    def checkpoint_rounds(self) -> list[int]:
        folder = self.root / "checkpoints"
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _ROUND_DIR.match(p.name)))

    def save_checkpoint(
        self,
        round_: int,
        hypernet: HyperLoRA,
        trainer: HypernetTrainer | None = None,
        extra: dict[str, Any] | None = None,
        optimizer_state: dict[str, torch.Tensor] | None = None,
    ) -> Path:
        """Save the hypernetwork (and the trainer's :meth:`~hypernet.HypernetTrainer.state_dict`,
        or ``optimizer_state`` as it returned it, as ``optimizer.safetensors``) after
        ``round_``, in one atomic swap of the folder.

        Without either an optimizer file already in the folder is kept.
        """
        folder = self.checkpoint_dir(round_)
        state = trainer.state_dict() if trainer is not None else optimizer_state
        files = {OPTIMIZER_FILE: save(state)} if state is not None else None
        save_hypernet(hypernet, folder, extra={"round": round_, **(extra or {})}, files=files)
        return folder

    def load_checkpoint(self, round_: int, spec: TargetSpec | None = None) -> HyperLoRA:
        return load_hypernet(self.checkpoint_dir(round_), spec=spec)

    # --------------------------------------------------------------- adapters
    def save_adapter(self, round_: int, client_id: str, adapter: dict[str, torch.Tensor]) -> str:
        """Write the adapter sent to ``client_id`` in ``round_``; return its :func:`adapter_hash`."""
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter.items()}
        atomic_write_bytes(
            self.adapter_path(round_, client_id), save(tensors, metadata={"client_id": client_id, "round": str(round_)})
        )
        return adapter_hash(tensors)

    def load_adapter(self, round_: int, client_id: str) -> dict[str, torch.Tensor]:
        path = self.adapter_path(round_, client_id)
        try:
            return load_file(path)
        except FileNotFoundError:
            raise CorruptFileError(f"{path} is missing") from None
        except SafetensorError as exc:
            raise CorruptFileError(f"{path} is not a valid safetensors file ({exc})") from None

    def adapter_rounds(self) -> list[int]:
        folder = self.root / "adapters"
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _ROUND_DIR.match(p.name)))

    def adapter_clients(self, round_: int) -> list[str]:
        folder = self.root / "adapters" / f"round-{round_:04d}"
        return sorted(client_from_file_name(p.name[: -len(".safetensors")]) for p in folder.glob("*.safetensors"))


def load_optimizer_file(folder: Path) -> dict[str, torch.Tensor]:
    """The trainer state saved beside a checkpoint (``{}`` if there is none); restore it with
    :meth:`hypernet.HypernetTrainer.load_state_dict`."""
    path = Path(folder) / OPTIMIZER_FILE
    try:
        return load_file(path)
    except FileNotFoundError:
        return {}
    except SafetensorError as exc:
        raise CorruptFileError(f"{path} is not a valid safetensors file ({exc})") from None


# ------------------------------------------------------------------ the layout, as data
# Every path a run directory may hold (POSIX, relative to its root), as regular expressions;
# the audit reports anything else as a stray. ``_FREE_DIRS`` belong to Flower's ``flwr run``
# launches (hyperfed.flower.launch): their contents are Flower's and are not inspected.
_NAME = r"[^/.][^/]*"  # no hidden names: an interrupted atomic write leaves ``.name.XXXX.tmp``
_ROUND = r"round-\d{4,}"
_LAYOUT_DIRS = (
    "secrets",
    "checkpoints",
    f"checkpoints/{_ROUND}",
    "adapters",
    f"adapters/{_ROUND}",
    "forgets",
    f"forgets/{_NAME}",
    f"forgets/{_NAME}/adapters",
    f"forgets/{_NAME}/adapters/round-0000",
    f"forgets/{_NAME}/replay",
    "plots",
)
_FREE_DIRS = ("logs", "flwr-home", r"flwr-home-node-\d+", f"forgets/{_NAME}/flower")
_LAYOUT_FILES = (
    r"run\.json",
    r"corpus_manifest\.json",
    r"metrics\.json",
    r"(ledger|outbox)\.db(-wal|-shm|-journal)?",
    r"ledger_head\.json",
    r"forgets\.json",
    r"forget_journal\.json",  # a pending forget: the audit reports it
    r"run-config\.toml",
    r"[^/]*\.lock",  # advisory lock files (the outbox's, a run lock)
    r"secrets/salts\.json",
    f"checkpoints/{_ROUND}/(hypernet\\.json|hypernet\\.safetensors|{re.escape(OPTIMIZER_FILE)})",
    f"adapters/{_ROUND}/{_NAME}\\.safetensors",
    f"forgets/{_NAME}/(report\\.json|report\\.png|adapter_hashes\\.json)",
    f"forgets/{_NAME}/adapters/round-0000/{_NAME}\\.safetensors",
    f"forgets/{_NAME}/replay/(hypernet\\.json|hypernet\\.safetensors|{re.escape(OPTIMIZER_FILE)})",
    f"plots/{_NAME}\\.png",
)


def _matcher(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


def layout_strays(root: str | os.PathLike) -> list[Path]:
    """Every file, folder or link under ``root`` outside the documented layout (module
    docstring), sorted; a stray folder is listed once, not with its contents.

    Examples of strays: ``checkpoints/.round-0015.old/`` (a half-done swap), ``*.tmp`` (an
    interrupted write), ``adapters/round-0001/notes.txt``, a symbolic link anywhere.
    """
    root = Path(root)
    dirs, free, files = _matcher(_LAYOUT_DIRS), _matcher(_FREE_DIRS), _matcher(_LAYOUT_FILES)
    strays: list[Path] = []
    for folder, subdirs, names in os.walk(root):
        here = Path(folder)
        keep = []
        for name in sorted(subdirs):
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or not (dirs.fullmatch(rel) or free.fullmatch(rel)):
                strays.append(path)
            elif not free.fullmatch(rel):
                keep.append(name)
        subdirs[:] = keep
        for name in sorted(names):
            path = here / name
            if path.is_symlink() or not path.is_file() or not files.fullmatch(path.relative_to(root).as_posix()):
                strays.append(path)
    return sorted(strays)
