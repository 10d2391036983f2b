"""``forget_client``: remove a client from a run — its embedding and every trace of it.

Modes
-----
``delete`` (instant)
    Remove the client's embedding and optimizer state from the current hypernetwork.
    The other clients' adapters are regenerated; since the shared weights do not change
    they come out bit-identical. The client's influence on the shared weights stays.
``exact``
    Roll back to the checkpoint before the client's first round, drop it, and replay the
    later rounds without it. Participation is Poisson-sampled from (seed, round, client),
    so nobody else's sampling changes and the result equals a run that never had the client
    (bit for bit on the same machine).

Both modes then purge the client from *every* checkpoint on disk (embedding and optimizer
state), delete every adapter generated for it, destroy its commitment salt (its on-chain
commitments can never be opened again), scrub it from ``metrics.json``, and record the
forget, the new checkpoint and the root of the regenerated adapters on the ledger.

Crash safety: the first durable write is a journal (``forget_journal.json``). Before it
exists nothing has changed; once it exists the forget *rolls forward* — every step is
idempotent, and any later ``forget_client`` or :func:`recover_pending_forget` finishes it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save

from hyperfed.errors import ConfigError, ForgottenClientError, UnknownClientError
from hyperfed.rundir import OPTIMIZER_FILE, RunDirectory, load_optimizer_file
from hyperfed.rundir.recorder import RunRecorder
from hyperfed.unlearning.modes import FORGET_MODES, forget_mode
from hypernet import HyperLoRA, load_hypernet, save_hypernet
from hypernet.atomic import atomic_write_bytes
from hypernet.io import read_meta
from hypernet.trainer_state import remove_client_state

if TYPE_CHECKING:
    from hyperfed.federation import HyperLoRAServer

__all__ = ["forget_client", "recover_pending_forget", "ForgetResult", "FORGET_STEPS", "forgotten_clients"]

log = logging.getLogger(__name__)

MODES = tuple(FORGET_MODES)  # see hyperfed.unlearning.modes (the registry)
FORGET_STEPS = ("model", "purge_checkpoints", "purge_adapters", "regenerate", "destroy_salt", "ledger", "scrub_metrics")
JOURNAL = "forget_journal.json"
LOG = "forgets.json"


@dataclass
class ForgetResult:
    """What a forget did (also appended to ``RUN/forgets.json``)."""

    client_id: str
    mode: str
    round: int
    seconds: float
    remaining_clients: list[str]
    adapter_hashes: dict[str, str] = field(default_factory=dict)
    first_round: int | None = None
    replayed_rounds: list[int] = field(default_factory=list)
    ledger_status: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def forgotten_clients(run_dir: str | Path | RunDirectory) -> list[str]:
    """Clients already forgotten in this run (from ``forgets.json``)."""
    rd = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
    return [entry["client_id"] for entry in rd.read_json(rd.root / LOG, default=[])]


def forget_client(
    run_dir: str | Path | RunDirectory,
    client_id: str,
    mode: str = "delete",
    *,
    server: HyperLoRAServer | None = None,
    after_step: Callable[[str], None] | None = None,
) -> ForgetResult:
    """Forget ``client_id`` in the run at ``run_dir``; see the module docstring.

    Parameters
    ----------
    mode:
        ``"delete"`` or ``"exact"``.
    server:
        A live :class:`~hyperfed.federation.HyperLoRAServer` of this run; the client is
        removed from its memory and optimizer too.
    after_step:
        Called with each step's name once it is durable (crash-injection tests use it).

    Raises
    ------
    UnknownClientError
        The run never had this client.
    ForgottenClientError
        It was forgotten already (forgetting is final; the id cannot come back).
    """
    forget_mode(mode)  # a typed error for a mode that is not registered
    rd = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
    pending = rd.read_json(rd.root / JOURNAL, default={})
    if pending and pending.get("client_id") == client_id and pending.get("mode") == mode:
        return _complete(rd, pending, server, after_step)  # a retry finishes the same forget
    if pending:
        _complete(rd, pending, None, None)  # finish the other, interrupted forget first
    _check_forgettable(rd, client_id)
    latest = max(rd.checkpoint_rounds())
    journal = {
        "client_id": client_id,
        "mode": mode,
        "round": latest,
        "first_round": _first_round(rd, client_id),
        "done": [],
        "started": time.time(),
    }
    rd.write_json(rd.root / JOURNAL, journal)  # the commit point: from here we roll forward
    return _complete(rd, journal, server, after_step)


def recover_pending_forget(run_dir: str | Path | RunDirectory) -> ForgetResult | None:
    """Finish a forget that a crash interrupted; ``None`` if there is none."""
    rd = run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)
    pending = rd.read_json(rd.root / JOURNAL, default={})
    return _complete(rd, pending, None, None) if pending else None


# ---------------------------------------------------------------------------- checks
def _check_forgettable(rd: RunDirectory, client_id: str) -> None:
    if client_id in forgotten_clients(rd):
        raise ForgottenClientError(f"client {client_id!r} was already forgotten; forgetting is final")
    rounds = rd.checkpoint_rounds()
    if not rounds:
        raise ConfigError(f"{rd.root} has no checkpoints: not a recorded HyperLoRA run")
    if client_id not in read_meta(rd.checkpoint_dir(rounds[-1]))["client_ids"]:
        raise UnknownClientError(f"client {client_id!r} is not part of the run in {rd.root}")


def _first_round(rd: RunDirectory, client_id: str) -> int | None:
    """The first round an adapter was generated for the client (``None``: never sampled)."""
    for round_ in rd.adapter_rounds():
        if rd.adapter_path(round_, client_id).exists():
            return round_
    return None


# ----------------------------------------------------------------------------- steps
def _complete(
    rd: RunDirectory, journal: dict[str, Any], server: HyperLoRAServer | None, after_step: Callable[[str], None] | None
) -> ForgetResult:
    client_id, mode, round_ = journal["client_id"], journal["mode"], journal["round"]
    started = time.perf_counter()
    result = ForgetResult(client_id, mode, round_, 0.0, [], first_round=journal.get("first_round"))

    def step(name: str, action: Callable[[], None]) -> None:
        if name not in journal["done"]:
            action()
            journal["done"].append(name)
            rd.write_json(rd.root / JOURNAL, journal)
        if after_step:
            after_step(name)

    step("model", lambda: _new_model(rd, journal))
    hypernet = rd.load_checkpoint(round_)
    if server is not None and client_id in server.hypernet.clients:
        server.trainer.remove_client(client_id)
    step("purge_checkpoints", lambda: _purge_checkpoints(rd, client_id))
    step("purge_adapters", lambda: _purge_adapters(rd, client_id))
    step("regenerate", lambda: _regenerate(rd, client_id, hypernet))
    hashes = rd.read_json(rd.forget_dir(client_id) / "adapter_hashes.json")
    result.adapter_hashes = {cid: hashes[cid] for cid in hypernet.client_ids}
    with RunRecorder.open(rd) as recorder:
        step("destroy_salt", lambda: recorder.salts.destroy(client_id))
        status: list[str] = []
        step(
            "ledger",
            lambda: status.append(
                recorder.record_forget(client_id, round_, hypernet, result.adapter_hashes, mode).status
            ),
        )
    step("scrub_metrics", lambda: _scrub_metrics(rd, client_id))
    result.remaining_clients = list(hypernet.client_ids)
    result.ledger_status = status[0] if status else "recorded earlier"
    result.replayed_rounds = journal.get("replayed_rounds", [])
    result.seconds = journal.get("seconds", 0.0) + (time.perf_counter() - started)
    log_entries = [e for e in rd.read_json(rd.root / LOG, default=[]) if e["client_id"] != client_id]
    rd.write_json(rd.root / LOG, [*log_entries, result.to_dict()])
    (rd.root / JOURNAL).unlink(missing_ok=True)
    log.info(
        "forgot %r (%s) in %.2f s; %d clients remain", client_id, mode, result.seconds, len(result.remaining_clients)
    )
    return result


def _new_model(rd: RunDirectory, journal: dict) -> None:
    """Write the post-forget hypernetwork as the latest checkpoint (the mode's own step)."""
    if journal.get("first_round") is None:  # never sampled: no round to undo, in any mode
        delete_model_step(rd, journal)
        return
    forget_mode(journal["mode"]).build_model(rd, journal)


def delete_model_step(rd: RunDirectory, journal: dict) -> None:
    """``delete``: the latest checkpoint without the client (shared weights unchanged)."""
    _purge_checkpoint(rd.checkpoint_dir(journal["round"]), journal["client_id"])


def _purge_checkpoint(folder: Path, client_id: str) -> None:
    """Rewrite one checkpoint folder without the client's embedding and optimizer state."""
    meta = read_meta(folder)
    optimizer = load_optimizer_file(folder)
    if client_id in meta["client_ids"]:
        hypernet = load_hypernet(folder)
        hypernet.remove_client(client_id)
        save_hypernet(hypernet, folder, extra=meta.get("extra", {}))
    kept = remove_client_state(optimizer, client_id)
    if len(kept) != len(optimizer):
        atomic_write_bytes(folder / OPTIMIZER_FILE, save(kept))


def _purge_checkpoints(rd: RunDirectory, client_id: str) -> None:
    for round_ in rd.checkpoint_rounds():
        _purge_checkpoint(rd.checkpoint_dir(round_), client_id)


def _purge_adapters(rd: RunDirectory, client_id: str) -> None:
    for round_ in rd.adapter_rounds():
        rd.adapter_path(round_, client_id).unlink(missing_ok=True)


def _regenerate(rd: RunDirectory, client_id: str, hypernet: HyperLoRA) -> None:
    """Regenerate every remaining client's adapter from the post-forget hypernetwork."""
    with torch.no_grad():
        adapters = hypernet.generate_many(hypernet.client_ids)
    regenerated = rd.regenerated(client_id)
    hashes = {cid: regenerated.save_adapter(0, cid, adapter) for cid, adapter in adapters.items()}
    rd.write_json(rd.forget_dir(client_id) / "adapter_hashes.json", hashes)


def _scrub_metrics(rd: RunDirectory, client_id: str) -> None:
    """Drop the client's per-client entries from ``metrics.json`` (its losses are traces too)."""
    metrics = rd.read_json(rd.metrics_path, default={})
    if not metrics:
        return

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items() if k != client_id}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    rd.write_json(rd.metrics_path, scrub(copy.deepcopy(metrics)))
