"""Audit checks of the run's own files: layout, pending forget, metrics, checkpoint files.

* **stray** — every file or folder outside the documented layout
  (:func:`hyperfed.rundir.layout.layout_strays`): a leftover ``checkpoints/.round-0015.old/``
  can hold a forgotten client's embedding, a ``*.tmp`` is an interrupted write.
* **forget** — a ``forget_journal.json`` is an interrupted forget. The audit never finishes
  it (that writes); it reports it, readable or not, and says how to finish it.
* **metrics** — ``metrics.json`` parses, its per-client tables name exactly the ledger's live
  clients, and no table anywhere is keyed by a forgotten client. Its numbers are on no
  ledger record: their integrity is not verifiable (a note says so).
* **checkpoint files** — each checkpoint's ``hypernet.safetensors`` matches the
  ``weights_sha256`` of its ``hypernet.json`` and the checkpoint loads; its generator config
  and optimizer state match the digests of its ``record_checkpoint_files`` record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hyperfed.errors import CorruptFileError, HyperFedError
from hyperfed.rundir import OPTIMIZER_FILE
from hyperfed.rundir.fingerprints import CONFIG_PART, OPTIMIZER_PART, POLICY_PART, checkpoint_file_digests
from hyperfed.rundir.layout import layout_strays
from hypernet.io import HYPERNET_META, HYPERNET_WEIGHTS, load_hypernet, read_meta

if TYPE_CHECKING:
    from hyperfed.ledger.records import CheckpointRecord
    from hyperfed.rundir.audit.checks import AuditContext

__all__ = ["JOURNAL", "check_layout", "check_pending_forget", "check_metrics", "check_checkpoint_files"]

JOURNAL = "forget_journal.json"  # written by hyperfed.unlearning.forget: its commit point
_JOURNAL_KEYS = ("client_id", "mode", "round", "done")
_RESUME = "run `hyperfed forget RUN --resume` to finish it"


def check_layout(audit: AuditContext) -> None:
    """One failing ``stray`` finding per file or folder outside the layout."""
    for path in layout_strays(audit.run_dir.root):
        kind = "link" if path.is_symlink() else "folder" if path.is_dir() else "file"
        hint = " (a half-done checkpoint swap?)" if path.name.endswith(".old") else ""
        hint = " (an interrupted write?)" if path.name.endswith(".tmp") else hint
        audit.add(
            "stray",
            "mismatch",
            path,
            f"{kind} outside the run layout{hint}: it may hold data the audit cannot vouch for; remove it",
        )


def check_pending_forget(audit: AuditContext) -> None:
    """Report ``forget_journal.json`` (an interrupted forget) without touching it."""
    path = audit.run_dir.root / JOURNAL
    if not path.exists():
        return
    try:
        journal = audit.run_dir.read_json(path)
    except CorruptFileError as exc:
        journal, problem = None, str(exc)
    else:
        missing = [k for k in _JOURNAL_KEYS if not isinstance(journal, dict) or k not in journal]
        problem = f"it misses {missing}" if isinstance(journal, dict) else f"it holds a JSON {type(journal).__name__}"
    if isinstance(journal, dict) and not missing:
        audit.add(
            "forget",
            "missing",
            path,
            f"a forget of {journal['client_id']!r} ({journal['mode']}, round {journal['round']}) was interrupted "
            f"after steps {list(journal['done'])}: the run is half-forgotten; {_RESUME}",
        )
    else:
        audit.add(
            "forget",
            "missing",
            path,
            f"an interrupted forget left an unreadable journal ({problem}): inspect it, then {_RESUME}",
        )


def _client_tables(metrics: Mapping[str, Any]) -> dict[str, set[str]]:
    """Name of each per-client table of ``metrics.json`` -> its client ids."""
    tables: dict[str, set[str]] = {}
    for name in ("base", "domain_of"):
        if isinstance(metrics.get(name), dict):
            tables[name] = set(metrics[name])
    final = metrics.get("final")
    if isinstance(final, dict):
        tables |= {f"final.{m}": set(v) for m, v in final.items() if isinstance(v, dict)}
    return tables


def _keyed_by(value: Any, names: set[str]) -> set[str]:
    """Which of ``names`` key a table (a JSON object) anywhere in ``value``: per-client
    numbers live under the client's id. (An id as a plain value — a config naming the
    canary client, a list of who was sampled — is not a per-client number.)"""
    if isinstance(value, dict):
        return (names & set(value)).union(*(_keyed_by(v, names) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_keyed_by(v, names) for v in value))
    return set()


def check_metrics(audit: AuditContext, active: set[str], forgotten: set[str]) -> None:
    """``metrics.json`` parses and names exactly the live clients (checked only if present)."""
    path = audit.run_dir.metrics_path
    if not path.exists():
        return
    audit.notes.append(
        f"{audit.rel(path)}: structure and client ids checked; its numbers are on no ledger record, "
        "so their integrity cannot be verified"
    )
    try:
        metrics = audit.run_dir.read_json(path)
    except CorruptFileError as exc:
        audit.add("metrics", "mismatch", path, str(exc))
        return
    if not isinstance(metrics, dict):
        audit.add("metrics", "mismatch", path, f"holds a JSON {type(metrics).__name__}, not an object")
        return
    leaked = _keyed_by(metrics, forgotten)
    if leaked:
        audit.add("metrics", "mismatch", path, f"still names forgotten client(s) {sorted(leaked)}")
    for table, ids in sorted(_client_tables(metrics).items()):
        extra, absent = ids - active - forgotten, active - ids
        if extra or absent:
            audit.add(
                "metrics",
                "mismatch",
                path,
                f"{table} names clients {sorted(extra)[:5]} the ledger never registered"
                if extra
                else f"{table} lacks live clients {sorted(absent)[:5]}",
            )
            return
    audit.add("metrics", "match", path, "parses; its client tables name exactly the ledger's live clients")


def _check_loads(audit: AuditContext, folder: Path) -> bool:
    """The weights match ``weights_sha256`` of ``hypernet.json`` and the checkpoint loads."""
    meta_path, weights = folder / HYPERNET_META, folder / HYPERNET_WEIGHTS
    try:
        meta = read_meta(folder)
        recorded = meta["weights_sha256"]
        actual = hashlib.sha256(weights.read_bytes()).hexdigest()
    except (CorruptFileError, KeyError, TypeError, OSError) as exc:
        audit.add("checkpoint", "mismatch", meta_path, f"unreadable metadata or weights: {exc}")
        return False
    if actual != recorded:
        audit.add("checkpoint", "mismatch", weights, f"sha256 {actual[:16]}… ≠ weights_sha256 of its {HYPERNET_META}")
        return False
    try:
        load_hypernet(folder)
    except (HyperFedError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        audit.add("checkpoint", "mismatch", meta_path, f"the checkpoint no longer loads: {exc}")
        return False
    return True


def check_checkpoint_files(
    audit: AuditContext,
    folder: Path,
    ckpt: CheckpointRecord,
    recorded: Mapping[tuple[int, str], Mapping[str, str]] | None,
    forgotten: set[str],
) -> None:
    """Metadata, loadability, and config/optimizer digests of one checkpoint folder.

    ``recorded`` is :meth:`~hyperfed.ledger.client.Ledger.checkpoint_files` (``None``: the
    ledger holds no such records, a run recorded before them).
    """
    if not _check_loads(audit, folder):
        return
    if recorded is None:
        return
    parts = recorded.get((ckpt.round, ckpt.weights_hash))
    where = f"checkpoint ({ckpt.round}, {ckpt.version}) in {audit.where(ckpt.tx_id)}"
    if parts is None:
        audit.add("checkpoint", "missing", f"ledger: files of checkpoint round {ckpt.round}", f"no digests of {where}")
        return
    try:
        actual = checkpoint_file_digests(folder)
    except CorruptFileError as exc:
        audit.add("checkpoint", "mismatch", folder / OPTIMIZER_FILE, str(exc))
        return
    gone = {OPTIMIZER_PART + f"client/{cid}" for cid in forgotten}
    failed = False
    bad: dict[Path, list[str]] = {}
    for part in sorted(set(actual) | set(parts)):
        culprit = folder / (HYPERNET_META if part in (CONFIG_PART, POLICY_PART) else OPTIMIZER_FILE)
        if part in gone:
            continue  # a forgotten client's state: check_checkpoint reports it if present
        if part not in actual:
            audit.add("checkpoint", "missing", culprit, f"{part} recorded with {where} is gone")
            failed = True
        elif part not in parts:
            bad.setdefault(culprit, []).append(f"{part} (never recorded)")
        elif actual[part] != parts[part]:
            bad.setdefault(culprit, []).append(part)
    for culprit, names in bad.items():
        audit.add("checkpoint", "mismatch", culprit, f"{', '.join(names[:4])} differ from the digests of {where}")
    if not bad and not failed:
        audit.add("checkpoint", "match", folder / HYPERNET_META, f"config and optimizer state = digests of {where}")
