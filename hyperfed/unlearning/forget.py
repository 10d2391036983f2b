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
state, in one atomic swap of each checkpoint folder), delete every adapter generated for
it, destroy its commitment salt (its on-chain commitments can never be opened again),
scrub it from ``metrics.json`` (every aggregate recomputed without it, the loss plot
redrawn) and from ``corpus_manifest.json``, and record the forget, the new checkpoint and
the root of the regenerated adapters on the ledger.

Safety
------
* It holds the run lock (:func:`hyperfed.rundir.lock.run_lock`): a second writer or an
  audit gets :class:`~hyperfed.errors.RunBusyError`; taking the lock settles what an
  interrupted write left behind, so a completed forget leaves no leftover.
* Before its commit point it checks every file it will touch (each checkpoint's metadata
  and weights sha256, each optimizer file, ``metrics.json``, the manifest, the salts, the
  forget log): a damaged one raises :class:`~hypernet.errors.CorruptFileError` naming it,
  and nothing has changed.
* The commit point is the journal (``forget_journal.json``). Once it exists the forget
  *rolls forward* — every step is idempotent, and a later ``forget_client`` of the same
  client or :func:`recover_pending_forget` (``hyperfed forget RUN --resume``) finishes it.
  Nothing else does: the audit only reports a pending forget. A journal that cannot be
  completed raises :class:`~hyperfed.errors.ForgetJournalError` naming it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save

from hyperfed.errors import (
    CorruptFileError,
    ForgetInterruptedError,
    ForgetJournalError,
    ForgottenClientError,
    NotARunError,
    UnknownClientError,
)
from hyperfed.ledger.salts import SaltStore
from hyperfed.rundir import OPTIMIZER_FILE, RunDirectory, load_optimizer_file
from hyperfed.rundir.lock import run_lock
from hyperfed.rundir.recorder import RunRecorder
from hyperfed.unlearning.guarantee import participations, stated_guarantee
from hyperfed.unlearning.modes import FORGET_MODES, forget_mode
from hypernet import HyperLoRA
from hypernet.atomic import atomic_write_bytes
from hypernet.io import read_meta, remove_client_from_checkpoint, verify_checkpoint
from hypernet.trainer_state import remove_client_state

if TYPE_CHECKING:
    from hyperfed.federation import HyperLoRAServer

__all__ = [
    "forget_client",
    "recover_pending_forget",
    "pending_forget",
    "ForgetResult",
    "FORGET_STEPS",
    "forgotten_clients",
]

log = logging.getLogger(__name__)

MODES = tuple(FORGET_MODES)  # see hyperfed.unlearning.modes (the registry)
FORGET_STEPS = (
    "model",
    "purge_checkpoints",
    "purge_adapters",
    "regenerate",
    "destroy_salt",
    "ledger",
    "scrub_metrics",
    "scrub_manifest",
)
JOURNAL = "forget_journal.json"
LOG = "forgets.json"
_JOURNAL_KEYS = {"client_id": str, "mode": str, "round": int, "done": list}


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
    guarantee: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _run_dir(run_dir: str | Path | RunDirectory) -> RunDirectory:
    return run_dir if isinstance(run_dir, RunDirectory) else RunDirectory(run_dir)


def forgotten_clients(run_dir: str | Path | RunDirectory) -> list[str]:
    """Clients already forgotten in this run (from ``forgets.json``)."""
    rd = _run_dir(run_dir)
    entries = rd.read_json(rd.root / LOG, default=[])
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "client_id" in e for e in entries):
        raise CorruptFileError(f"{rd.root / LOG} is not a list of forget records: restore it from a backup")
    return [entry["client_id"] for entry in entries]


def forget_client(
    run_dir: str | Path | RunDirectory,
    client_id: str,
    mode: str = "delete",
    *,
    server: HyperLoRAServer | None = None,
    after_step: Callable[[str], None] | None = None,
    superlink: str | None = None,
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
    superlink:
        ``exact`` on a Flower deployment's run: ``HOST:PORT`` of the SuperLink's Control API
        the remaining clients' SuperNodes are connected to; the replay is a ``flwr run`` of
        the same app there (:mod:`hyperfed.flower.replay`). Default: replay in this process.

    Raises
    ------
    UnknownClientError
        The run never had this client.
    ForgottenClientError
        It was forgotten already (forgetting is final; the id cannot come back).
    NotARunError
        ``run_dir`` is not a run directory.
    RunBusyError
        Another process writes or audits the run; nothing was changed.
    CorruptFileError
        A file the forget would touch is damaged (named); nothing was changed.
    ForgetJournalError
        A pending forget's journal cannot be completed (named, with what to do).
    ForgetInterruptedError
        The forget was committed, then an OS error (e.g. a read-only disk) or a failed
        Flower replay (SuperLink down, a remaining client not connected) stopped it; it
        finishes with :func:`recover_pending_forget` once the cause is fixed.
    """
    forget_mode(mode)  # a typed error for a mode that is not registered
    rd = _run_dir(run_dir).require_run()
    with run_lock(rd, "forget"):  # not naming the client: the lock file outlives the forget
        pending = _read_journal(rd)
        if pending and pending["client_id"] == client_id and pending["mode"] == mode:
            return _finish(rd, pending, server, after_step)  # a retry finishes the same forget
        if pending:
            _finish(rd, pending, None, None)  # finish the other, interrupted forget first
        _check_forgettable(rd, client_id)
        _check_files(rd)
        latest = max(rd.checkpoint_rounds())
        journal = {
            "client_id": client_id,
            "mode": mode,
            "round": latest,
            "first_round": _first_round(rd, client_id),
            "participations": participations(rd, client_id),
            **({"superlink": superlink} if superlink else {}),
            "done": [],
            "started": time.time(),
        }
        rd.write_json(rd.root / JOURNAL, journal)  # the commit point: from here we roll forward
        return _finish(rd, journal, server, after_step, checked=True)


def recover_pending_forget(run_dir: str | Path | RunDirectory) -> ForgetResult | None:
    """Finish a forget that a crash interrupted (``hyperfed forget RUN --resume``); ``None``
    if there is none. Raises what :func:`forget_client` raises."""
    rd = _run_dir(run_dir).require_run()
    with run_lock(rd, "forget --resume"):
        pending = _read_journal(rd)
        return _finish(rd, pending, None, None) if pending else None


def pending_forget(run_dir: str | Path | RunDirectory) -> dict[str, Any] | None:
    """The journal of a forget that is committed but not finished (``None``: none); read
    only. Raises :class:`~hyperfed.errors.ForgetJournalError` for one that cannot complete."""
    return _read_journal(_run_dir(run_dir))


def _finish(
    rd: RunDirectory,
    journal: dict[str, Any],
    server: HyperLoRAServer | None,
    after_step: Callable[[str], None] | None,
    checked: bool = False,
) -> ForgetResult:
    if not checked:
        _check_files(rd)  # a resumed forget too starts from intact files
    try:
        return _complete(rd, journal, server, after_step)
    except OSError as exc:
        raise ForgetInterruptedError(
            f"the forget of {journal['client_id']!r} stopped: {exc}. It is committed "
            f"({rd.root / JOURNAL}); fix the cause, then run `hyperfed forget {rd.root} --resume`"
        ) from exc


# ---------------------------------------------------------------------------- checks
def _journal_error(rd: RunDirectory, problem: str) -> ForgetJournalError:
    return ForgetJournalError(
        f"{rd.root / JOURNAL} {problem}, so the forget it describes cannot be completed; nothing was "
        "changed. forget_client writes a journal only after checking the run, so this one was damaged or "
        "written by hand: if no forget was running, move it away and run `hyperfed audit`; otherwise restore "
        "it from a backup"
    )


def _read_journal(rd: RunDirectory) -> dict[str, Any] | None:
    """The pending forget's journal, checked to be completable (``None``: no journal)."""
    path = rd.root / JOURNAL
    try:
        data = rd.read_json(path)
    except CorruptFileError:
        if not path.exists():
            return None
        raise _journal_error(rd, "is not valid JSON") from None
    if not isinstance(data, dict):
        raise _journal_error(rd, f"holds a JSON {type(data).__name__}, not an object")
    for key, kind in _JOURNAL_KEYS.items():
        if not isinstance(data.get(key), kind) or (kind is int and isinstance(data.get(key), bool)):
            raise _journal_error(rd, f"misses {key!r} (a {kind.__name__})")
    if data["mode"] not in FORGET_MODES:
        raise _journal_error(rd, f"names mode {data['mode']!r}, not one of {tuple(FORGET_MODES)}")
    unknown_steps = [s for s in data["done"] if s not in FORGET_STEPS]
    if unknown_steps:
        raise _journal_error(rd, f"lists unknown steps {unknown_steps}")
    first = data.get("first_round")
    if first is not None and (not isinstance(first, int) or isinstance(first, bool)):
        raise _journal_error(rd, f"has first_round {first!r}, not a round number")
    if data["round"] not in rd.checkpoint_rounds():
        raise _journal_error(rd, f"names round {data['round']}, which has no checkpoint")
    if "purge_checkpoints" not in data["done"] and not _ever_had(rd, data["client_id"]):  # after it: gone
        raise _journal_error(rd, f"names client {data['client_id']!r}, which this run never had")
    return data


def _ever_had(rd: RunDirectory, client_id: str) -> bool:
    """Whether the run has or had the client: forgotten, holding a salt, or in a checkpoint."""
    if client_id in forgotten_clients(rd) or client_id in SaltStore(rd.salts_path):
        return True
    return any(client_id in read_meta(rd.checkpoint_dir(r)).get("client_ids", []) for r in rd.checkpoint_rounds())


def _check_files(rd: RunDirectory) -> None:
    """Every file a forget touches is intact, or a :class:`CorruptFileError` names it."""
    for round_ in rd.checkpoint_rounds():
        folder = rd.checkpoint_dir(round_)
        verify_checkpoint(folder)
        load_optimizer_file(folder)
    for path in (rd.metrics_path, rd.manifest_path, rd.config_path):
        if path.exists() and not isinstance(rd.read_json(path), dict):
            raise CorruptFileError(f"{path} is not a JSON object: restore it from a backup")
    forgotten_clients(rd)
    SaltStore(rd.salts_path).ids()


def _check_forgettable(rd: RunDirectory, client_id: str) -> None:
    if client_id in forgotten_clients(rd):
        raise ForgottenClientError(f"client {client_id!r} was already forgotten; forgetting is final")
    rounds = rd.checkpoint_rounds()
    if not rounds:
        raise NotARunError(f"{rd.root} has no checkpoints: not a recorded HyperLoRA run")
    if client_id not in read_meta(rd.checkpoint_dir(rounds[-1]))["client_ids"]:
        raise UnknownClientError(f"client {client_id!r} is not part of the run in {rd.root}")


def _first_round(rd: RunDirectory, client_id: str) -> int | None:
    """The first round an adapter was generated for the client (``None``: never sampled).

    An exact forget removes the adapters of the rounds after its client's first
    (:func:`~hyperfed.unlearning.replay.drop_superseded`), so a client with no adapter left
    may have been sampled in a round whose folder is gone: then the earliest such round is
    returned — a replay from there is exact too, only longer.
    """
    rounds = rd.adapter_rounds()
    for round_ in rounds:
        if rd.adapter_path(round_, client_id).exists():
            return round_
    gaps = sorted(set(range(1, max(rd.checkpoint_rounds(), default=0) + 1)) - set(rounds))
    return gaps[0] if gaps and forgotten_clients(rd) else None


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

    if not isinstance(journal.get("participations"), int) and "purge_adapters" not in journal["done"]:
        journal["participations"] = participations(rd, client_id)  # a journal from before the field
        rd.write_json(rd.root / JOURNAL, journal)
    step("model", lambda: _new_model(rd, journal))
    hypernet = rd.load_checkpoint(round_)
    if server is not None and client_id in server.hypernet.clients:
        server.trainer.remove_client(client_id)
    step("purge_checkpoints", lambda: _purge_checkpoints(rd, client_id))
    step("purge_adapters", lambda: _purge_adapters(rd, client_id))
    step("regenerate", lambda: _regenerate(rd, client_id, hypernet))
    hashes = rd.read_json(rd.forget_dir(client_id) / "adapter_hashes.json")
    result.adapter_hashes = {cid: hashes[cid] for cid in hypernet.client_ids}
    result.guarantee = stated_guarantee(rd, journal)
    with RunRecorder.open(rd) as recorder:
        step("destroy_salt", lambda: recorder.salts.destroy(client_id))
        status: list[str] = []
        step(
            "ledger",
            lambda: status.append(
                recorder.record_forget(
                    client_id, round_, hypernet, result.adapter_hashes, mode, result.guarantee
                ).status
            ),
        )
    step("scrub_metrics", lambda: _scrub_metrics(rd, client_id))
    step("scrub_manifest", lambda: _scrub_manifest(rd, client_id))
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
    """Rewrite one checkpoint folder without the client's embedding and optimizer state.

    Both files change in one swap of the folder
    (:func:`hypernet.io.remove_client_from_checkpoint` with the optimizer as a sibling;
    tensor level, no generator is built), so a crash leaves the old pair or the new one; an
    optimizer file is never dropped, whether or not it held the client (it may never have
    been sampled by that round). Nothing is written if the client is in neither.
    """
    meta = read_meta(folder)
    optimizer = load_optimizer_file(folder)
    kept = remove_client_state(optimizer, client_id)
    in_meta = client_id in meta["client_ids"]
    if not in_meta and len(kept) == len(optimizer):
        return
    if not in_meta:
        atomic_write_bytes(folder / OPTIMIZER_FILE, save(kept))
        return
    files = {OPTIMIZER_FILE: save(kept)} if (folder / OPTIMIZER_FILE).exists() else None
    remove_client_from_checkpoint(folder, client_id, files=files)


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
    """``metrics.json`` without the client, every mean recomputed over the others, and the
    loss plot redrawn from it (its losses are traces too; see
    :func:`hyperfed.experiment.metrics_without_client`)."""
    from hyperfed.experiment import metrics_without_client
    from hyperfed.plots import redraw_plots

    metrics = rd.read_json(rd.metrics_path, default={})
    if metrics:
        rd.write_json(rd.metrics_path, metrics_without_client(metrics, client_id))
    redraw_plots(rd)


def _scrub_manifest(rd: RunDirectory, client_id: str) -> None:
    """Drop the client's entry from ``corpus_manifest.json`` (and, in a manifest written
    before it held only token counts, the other clients' unsalted text hashes: each is a
    "does this text match?" oracle)."""
    manifest = rd.read_json(rd.manifest_path, default={})
    scrubbed = {k: ({} if isinstance(v, str) else v) for k, v in manifest.items() if k != client_id}
    if scrubbed != manifest:
        rd.write_json(rd.manifest_path, scrubbed)
