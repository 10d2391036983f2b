"""An exact forget's replay as a Flower run: the run's strategy, resumed without the client.

The server holds no client data. It loads checkpoint ``first_round - 1`` (weights and
optimizer state), drops the client, and runs rounds ``first_round .. last`` of the same
:class:`~hyperfed.flower.strategy.AdapterStrategy` on a Grid whose nodes are the clients
left — each ClientApp trains on its own data, as in the run. Poisson sampling hashes
(seed, round, client id), so everyone else is sampled as before and the result equals a
run that never had the client.

Three ways to drive it, chosen by :func:`~hyperfed.unlearning.replay.exact_model_step`:

* :func:`replay_in_process` — a run made on the in-process grid (``run_experiment`` with
  engine ``flower``, :func:`~hyperfed.flower.run_inprocess`): the grid is rebuilt in this
  process with one ClientApp node per client left;
* :func:`replay_on_superlink` — a deployment: ``flwr run`` of the same app against a
  SuperLink the remaining SuperNodes are connected to, with the run config keys
  :data:`~hyperfed.flower.keys.REPLAY_WITHOUT` / :data:`~hyperfed.flower.keys.REPLAY_FROM`;
  the ServerApp (:func:`serve_replay`) writes the result to ``forgets/<id>/replay/`` and
  this process swaps it in;
* runs made by the ``loop`` engine replay in the loop (:func:`hyperfed.unlearning.replay.replay_without`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.serverapp import Grid
from safetensors.torch import save

from hyperfed.config import RunConfig, RunConfigValue
from hyperfed.flower import keys
from hyperfed.flower.cache import build_peft_model
from hyperfed.flower.directory import ClientDirectory
from hyperfed.flower.errors import FlowerRunError
from hyperfed.flower.strategy import AdapterStrategy, run_strategy
from hypernet import load_hypernet, save_hypernet
from hypernet.errors import ConfigError, CorruptFileError

if TYPE_CHECKING:
    from hyperfed.federation import HyperLoRAServer
    from hyperfed.rundir import RunDirectory

__all__ = [
    "replay_on_grid",
    "replay_in_process",
    "replay_on_superlink",
    "serve_replay",
    "remove_replay_files",
    "clients_left",
]

log = logging.getLogger(__name__)

_RESULT = "replay"  # forgets/<id>/replay/: the ServerApp's result, swapped in by the forget
_WORK = "flower"  # forgets/<id>/flower/: run-config.toml, flwr-home/, logs/


def replay_on_grid(
    grid: Grid, rd: RunDirectory, client_id: str, first_round: int, *, timeout: float = 3600.0
) -> HyperLoRAServer:
    """Rounds ``first_round ..`` the run's last, replayed on ``grid`` without ``client_id``.

    Every client of the run's latest checkpoint but ``client_id`` must connect (a missing
    one would change the result: :class:`~hyperfed.flower.errors.ClientIdentityError`);
    nodes of any other client are ignored. Returns the server after the last round.
    """
    from hyperfed.unlearning.replay import resumed_server

    config = RunConfig.from_dict(rd.read_json(rd.config_path))
    fed = config.with_method("hyperlora").federation
    if not 1 <= first_round <= fed.rounds:
        raise ConfigError(f"cannot replay from round {first_round} of a {fed.rounds}-round run")
    left = clients_left(rd, client_id)
    server = resumed_server(rd, client_id, first_round, build_peft_model(config.base_model, fed.lora_rank), fed)
    strategy = AdapterStrategy(
        server,
        directory=ClientDirectory(only=left),
        min_nodes=len(left),
        evaluate_every=0,
        evaluate_last=False,  # the forget regenerates and measures afterwards
        first_round=first_round,
    )
    log.info("replaying rounds %d..%d without %r on %d nodes", first_round, fed.rounds, client_id, len(left))
    run_strategy(grid, strategy, timeout=timeout, evaluate_before_training=False, required=left)
    failed = {o.round: sorted(o.rejected) for o in strategy.history.rounds if o.rejected}
    if failed:  # the run may have had them too; the replay is then only as exact as its clients
        log.warning("replay: clients whose replies were rejected, by round: %s", failed)
    return server


def clients_left(rd: RunDirectory, client_id: str) -> list[str]:
    """The clients of the run's latest checkpoint but ``client_id``: who a replay needs."""
    return [c for c in rd.load_checkpoint(max(rd.checkpoint_rounds())).client_ids if c != client_id]


def replay_in_process(rd: RunDirectory, client_id: str, first_round: int) -> HyperLoRAServer:
    """:func:`replay_on_grid` on an in-process grid of the clients left (the default
    ClientApp, identified by ``client-id``, each training on its own data)."""
    from hyperfed.flower.client_app import app as client_app
    from hyperfed.flower.inprocess import InProcessGrid

    config = RunConfig.from_dict(rd.read_json(rd.config_path))
    nodes = [{keys.CLIENT_ID: c} for c in clients_left(rd, client_id)]
    grid = InProcessGrid(client_app, nodes, config.to_run_config())
    return replay_on_grid(grid, rd, client_id, first_round, timeout=config.round_timeout)


# ------------------------------------------------------------------- deployment
def serve_replay(grid: Grid, config: RunConfig, client_id: str, first_round: int) -> Path:
    """The ServerApp's side of :func:`replay_on_superlink`: replay on ``grid`` and write the
    result to ``forgets/<id>/replay/`` of ``config.run_dir``; return that folder.

    Only a pending exact forget of ``client_id`` whose replay starts at ``first_round`` asks
    for it (its journal says so; else :class:`~hypernet.errors.ConfigError` and nothing is written). It
    takes no run lock: the forget that asked holds it and waits for this run.
    """
    from hyperfed.rundir import OPTIMIZER_FILE, RunDirectory
    from hyperfed.unlearning.forget import pending_forget
    from hyperfed.unlearning.replay import replay_start

    rd = RunDirectory(config.run_dir).require_run()
    journal = pending_forget(rd) or {}
    first = journal.get("first_round")
    asked = [journal.get("client_id"), journal.get("mode"), isinstance(first, int) and replay_start(rd, first)]
    if asked != [client_id, "exact", first_round]:
        raise ConfigError(f"no pending exact forget of {client_id!r} replaying from round {first_round} in {rd.root}")
    server = replay_on_grid(grid, rd, client_id, first_round, timeout=config.round_timeout)
    folder = rd.forget_dir(client_id) / _RESULT
    extra = {"replay_without": client_id, "first_round": first_round, "round": server.config.rounds}
    save_hypernet(server.hypernet, folder, extra=extra, files={OPTIMIZER_FILE: save(server.trainer.state_dict())})
    log.info("replay without %r written to %s", client_id, folder)
    return folder


def replay_on_superlink(
    rd: RunDirectory, client_id: str, first_round: int, superlink: str, *, timeout: float = 3600.0
) -> tuple[Any, dict[str, Any]]:
    """``flwr run`` the replay on the deployment at ``superlink`` (``HOST:PORT`` of its
    Control API) and return the replayed ``(hypernet, optimizer state)``.

    The remaining clients' SuperNodes must be connected to that SuperLink; the ServerApp
    reads and writes ``rd`` (it runs where the run directory is). Raises
    :class:`~hyperfed.flower.errors.FlowerRunError` if the run fails or writes no result.
    """
    from hyperfed.flower.launch import APP_DIR, write_run_config
    from hyperfed.flower.processes import flower_env, flwr_run, run_status, write_connection
    from hyperfed.rundir import load_optimizer_file

    config = RunConfig.from_dict(rd.read_json(rd.config_path))
    work = rd.forget_dir(client_id) / _WORK
    result = rd.forget_dir(client_id) / _RESULT
    if not _finished_replay(result, client_id, first_round):  # else a resumed forget: it ran already
        shutil.rmtree(result, ignore_errors=True)  # an interrupted attempt's leftover
        toml = write_run_config(config, work / "run-config.toml", extra=_replay_keys(rd, client_id, first_round))
        env = flower_env(work / "flwr-home")
        write_connection(work / "flwr-home", "replay", superlink)
        run_id = flwr_run(APP_DIR, "replay", env, toml, work / "logs" / "flwr-run.log", timeout, None)
        status = run_status("replay", run_id, env)
        if status != "finished:completed" or not _finished_replay(result, client_id, first_round):
            raise FlowerRunError(f"replay run {run_id} ended with status {status!r}; see {work / 'logs'}")
    hypernet = load_hypernet(result)
    if client_id in hypernet.client_ids:
        raise FlowerRunError(f"the replay result in {result} still holds {client_id!r}")
    return hypernet, load_optimizer_file(result)


def _finished_replay(folder: Path, client_id: str, first_round: int) -> bool:
    """Whether ``folder`` holds a complete replay result for this forget."""
    from hypernet.io import read_meta

    try:
        extra = read_meta(folder).get("extra", {})
    except CorruptFileError:  # none there, or half written
        return False
    wanted = {"replay_without": client_id, "first_round": first_round}
    return isinstance(extra, dict) and all(extra.get(k) == v for k, v in wanted.items())


def _replay_keys(rd: RunDirectory, client_id: str, first_round: int) -> dict[str, RunConfigValue]:
    return {"run-dir": str(rd.root.resolve()), keys.REPLAY_WITHOUT: client_id, keys.REPLAY_FROM: first_round}


def remove_replay_files(rd: RunDirectory, client_ids: Sequence[str]) -> None:
    """Delete what a deployment replay left in ``forgets/<id>/`` (after its result is in)."""
    for client_id in client_ids:
        for name in (_RESULT, _WORK):
            shutil.rmtree(rd.forget_dir(client_id) / name, ignore_errors=True)
