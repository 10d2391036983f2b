"""The ``frozen`` shared-weight policy, checked from the files and the ledger.

Under ``federation.shared_policy = "frozen"`` the shared weights never change during the
federation, so a delete-mode forget is exact. The proof: the shared-weights hash committed
on the ledger with the first checkpoint (round 0, recorded when the clients registered)
is the hash of every later checkpoint, on disk and on the ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hyperfed.errors import CorruptFileError
from hyperfed.rundir import RunDirectory
from hyperfed.rundir.fingerprints import POLICY_KEY, read_checkpoint_tensors, run_policy
from hypernet.io import HYPERNET_META, read_meta

if TYPE_CHECKING:
    from hyperfed.ledger.client import Ledger
    from hyperfed.rundir.audit.checks import AuditContext

__all__ = ["shared_policy_of", "recorded_policies", "frozen_shared_problems", "check_shared_policy"]


def shared_policy_of(run_dir: RunDirectory) -> str:
    """The run's ``federation.shared_policy`` from ``run.json`` (``"shared"`` when unset)."""
    config = run_dir.read_json(run_dir.config_path, default={}) or {}
    federation = config.get("federation", {}) if isinstance(config, dict) else {}
    policy = federation.get("shared_policy", "shared") if isinstance(federation, dict) else "shared"
    return str(policy)


def recorded_policies(run_dir: RunDirectory) -> dict[int, dict[str, Any]]:
    """``{round: policy}`` recorded in each checkpoint's ``hypernet.json`` (its digest is on
    the ledger with the checkpoint's files, checked by the files step); checkpoints written
    before the policy was recorded are left out."""
    out: dict[int, dict[str, Any]] = {}
    for round_ in run_dir.checkpoint_rounds():
        try:
            extra = read_meta(run_dir.checkpoint_dir(round_)).get("extra", {})
        except CorruptFileError:
            continue  # reported by the checkpoint checks
        if isinstance(extra, dict) and isinstance(extra.get(POLICY_KEY), dict):
            out[round_] = dict(extra[POLICY_KEY])
    return out


def frozen_shared_problems(run_dir: RunDirectory, committed: str | None = None) -> list[tuple[str, str]]:
    """``(culprit, problem)`` for every checkpoint whose shared-weights hash differs from
    ``committed`` (default: the hash of the earliest checkpoint on disk). Empty: frozen held."""
    rounds = run_dir.checkpoint_rounds()
    problems: list[tuple[str, str]] = []
    hashes: dict[int, str] = {}
    for round_ in rounds:
        folder = run_dir.checkpoint_dir(round_)
        try:
            hashes[round_] = read_checkpoint_tensors(folder).shared_hash
        except CorruptFileError as exc:
            problems.append((str(folder), f"unreadable: {exc}"))
    if not hashes:
        return problems
    reference = committed if committed is not None else hashes[min(hashes)]
    for round_, value in sorted(hashes.items()):
        if value != reference:
            problems.append(
                (
                    str(run_dir.checkpoint_dir(round_)),
                    f"shared weights hash {value[:16]}… ≠ committed {reference[:16]}…",
                )
            )
    return problems


def check_shared_policy(audit: AuditContext, ledger: Ledger) -> None:
    """Audit step: the policy ``run.json`` states is the one recorded with every checkpoint;
    under ``frozen`` (stated or recorded), every checkpoint (files and ledger records)
    carries the shared-weights hash committed with the first checkpoint."""
    run_dir = audit.run_dir
    stated = run_policy(run_dir.read_json(run_dir.config_path, default={}))
    recorded = recorded_policies(run_dir)
    differ = {r: p for r, p in recorded.items() if p != stated}
    for round_, policy in sorted(differ.items()):
        audit.add(
            "policy",
            "mismatch",
            run_dir.checkpoint_dir(round_) / HYPERNET_META,
            f"run.json states policy {stated}, the checkpoint recorded {policy}",
        )
    if recorded and not differ:
        audit.add(
            "policy",
            "match",
            run_dir.config_path,
            f"policy {stated['shared_policy']!r} = the one recorded with all {len(recorded)} checkpoints",
        )
    if stated["shared_policy"] != "frozen" and all(p.get("shared_policy") != "frozen" for p in recorded.values()):
        return
    records: list[Any] = audit.query("list_checkpoints", ledger.list_checkpoints, [])
    if not records:
        audit.add("policy", "missing", "ledger: checkpoint of round 0", "frozen run without a committed shared hash")
        return
    first = min(records, key=lambda r: (r.round, r.version))
    committed = str(first.weights_hash)
    bad = [r for r in records if r.weights_hash != committed]
    for record in bad:
        audit.add(
            "policy",
            "mismatch",
            f"ledger: checkpoint ({record.round}, {record.version})",
            f"frozen policy broken: shared hash {record.weights_hash[:16]}… ≠ committed {committed[:16]}…",
        )
    problems = frozen_shared_problems(run_dir, committed)
    for culprit, problem in problems:
        audit.add("policy", "mismatch", Path(culprit), f"frozen policy broken: {problem}")
    if not bad and not problems:
        audit.add(
            "policy",
            "match",
            "checkpoints",
            f"frozen: all {len(records)} checkpoint records and files carry the committed shared hash "
            f"{committed[:16]}…",
        )
