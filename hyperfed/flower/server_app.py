"""The Flower ServerApp: build the method's server, handshake, run the rounds, write results.

Flower component reference: ``hyperfed.flower.server_app:app``. Everything it does is in
:func:`run_server` (usable with any :class:`~flwr.serverapp.Grid`) and :func:`on_finish`
(the only function that writes to the run directory).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from hyperfed.config import RunConfig, RunConfigValue
from hyperfed.federation import AdapterServer, RoundOutcome
from hyperfed.federation.public_pretrain import make_run_server
from hyperfed.flower import keys
from hyperfed.flower.cache import build_peft_model
from hyperfed.flower.strategy import AdapterStrategy, run_strategy
from hypernet.atomic import atomic_write_text

__all__ = ["app", "build_server_app", "build_strategy", "run_server", "on_finish", "METRICS_FILE"]

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"

FinishHook = Callable[[AdapterServer, AdapterStrategy, Path, RunConfig], Any]


def build_strategy(
    config: RunConfig, server: AdapterServer | None = None, on_round: Callable[[RoundOutcome], None] | None = None
) -> AdapterStrategy:
    """The strategy for ``config``, holding ``server`` or a fresh one from
    :func:`~hyperfed.federation.public_pretrain.make_run_server` (publicly pretrained if asked).

    A fresh server starts from the cached base model with LoRA of rank
    ``config.federation.lora_rank`` (the same layout every ClientApp builds).
    """
    if server is None:
        peft_model = build_peft_model(config.base_model, config.federation.lora_rank)
        server = make_run_server(config.federation.method, peft_model, config.federation, config.corpus)
    return AdapterStrategy(
        server, min_nodes=config.min_nodes, evaluate_every=config.evaluation.every, on_round=on_round
    )


def run_server(
    grid: Grid,
    config: RunConfig,
    server: AdapterServer | None = None,
    on_round: Callable[[RoundOutcome], None] | None = None,
) -> AdapterStrategy:
    """Handshake and ``config.federation.rounds`` rounds on ``grid``; return the strategy.

    The trained server is ``strategy.server``; what happened is ``strategy.history``.
    """
    strategy = build_strategy(config, server, on_round)
    run_strategy(grid, strategy, timeout=config.round_timeout)
    return strategy


def run_recorded(grid: Grid, config: RunConfig) -> AdapterStrategy:
    """:func:`run_server`, and — with a ``run-dir`` — write the run the way
    :func:`~hyperfed.experiment.run_experiment` does: ``run.json`` first, then for a
    HyperLoRA run every client registration, one checkpoint per round (round 0 = the
    initial weights) and every generated adapter to the run directory and the ledger
    (``ledger-url``, default ``run-dir/ledger.db``), through the same
    :meth:`~hyperfed.rundir.recorder.RunRecorder.record_round` as the experiment. Forget
    (both modes), its report and ``hyperfed audit`` then work on the run.

    It holds the run lock (:func:`hyperfed.rundir.lock.run_lock`) while it writes: a
    second writer of the same ``run-dir`` gets :class:`~hyperfed.errors.RunBusyError`.
    """
    if not config.run_dir:
        return run_server(grid, config)
    from hyperfed.rundir import RunDirectory
    from hyperfed.rundir.lock import run_lock

    run_dir = RunDirectory(config.run_dir)
    run_dir.root.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir, "flower ServerApp"):
        return _run_recorded(grid, config, run_dir)


def _run_recorded(grid: Grid, config: RunConfig, run_dir: Any) -> AdapterStrategy:
    run_dir.write_json(run_dir.config_path, replace(config, methods=(config.federation.method,)).to_dict())
    if config.federation.method != "hyperlora":
        return run_server(grid, config)
    from hyperfed.rundir.recorder import RunRecorder

    peft_model = build_peft_model(config.base_model, config.federation.lora_rank)
    server = make_run_server("hyperlora", peft_model, config.federation, config.corpus)
    with RunRecorder.open(run_dir, config.ledger.url or None, writer_msp=config.ledger.writer_msp) as recorder:
        recorder.record_checkpoint(0, server.hypernet, server.trainer)
        return run_server(grid, config, server, on_round=recorder.round_callback(server))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def on_finish(
    server: AdapterServer, strategy: AdapterStrategy, run_dir: str | Path, config: RunConfig | None = None
) -> Path:
    """Write ``metrics.json`` into ``run_dir``: config, per-round outcomes, per-client eval.

    Returns
    -------
    Path
        The file written (atomically: a reader never sees half of it).
    """
    path = Path(run_dir) / METRICS_FILE
    payload = {
        "method": server.method,
        "config": config.to_run_config() if config is not None else {"federation": server.config.to_dict()},
        **strategy.history.to_dict(),
    }
    atomic_write_text(path, json.dumps(_json_safe(payload), indent=1, sort_keys=False))
    log.info("wrote %s", path)
    return path


def _show_logs_with_flower() -> None:
    """In a ServerApp process, print our INFO logs where Flower prints its own (``flwr run
    --stream`` shows them). Only the Flower entry point calls this; the library never
    configures logging.

    Once per process, and only when Flower's handlers are in place (under ``hyperfed`` the
    CLI has taken Flower's console handler off and shows both itself). Our records then stop
    at Flower's handlers instead of also reaching a root handler: each line prints once."""
    ours, flowers = logging.getLogger("hyperfed"), logging.getLogger("flwr")
    if not ours.handlers and flowers.handlers:
        for handler in flowers.handlers:
            ours.addHandler(handler)
        ours.setLevel(logging.INFO)
        ours.propagate = False


def build_server_app(
    defaults: Mapping[str, RunConfigValue] | None = None, finish: FinishHook | None = on_finish
) -> ServerApp:
    """A ServerApp whose run config is ``defaults`` overridden by ``context.run_config``.

    ``finish(server, strategy, run_dir, config)`` runs after the last round when the run
    config names a ``run-dir`` (default :func:`on_finish`).
    """
    defaults = dict(defaults or {})
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        _show_logs_with_flower()
        run_config, replay = keys.split_replay_keys({**defaults, **context.run_config})
        config = RunConfig.from_run_config(run_config)
        if replay is not None:  # an exact forget's replay: hyperfed.flower.replay
            from hyperfed.flower.replay import serve_replay

            log.info("HyperFed ServerApp: replaying without %r from round %d", *replay)
            serve_replay(grid, config, *replay)
            return
        log.info("HyperFed ServerApp: method %s, %d rounds", config.federation.method, config.federation.rounds)
        if config.run_dir:
            from hyperfed.rundir.lock import run_lock

            Path(config.run_dir).mkdir(parents=True, exist_ok=True)
            with run_lock(config.run_dir, "flower ServerApp"):  # the recorded run and its metrics
                strategy = run_recorded(grid, config)
                if finish is not None:
                    finish(strategy.server, strategy, Path(config.run_dir), config)
        else:
            run_server(grid, config)
            log.warning("run-dir is empty: the results of this run are not written anywhere")

    return server_app


#: The Flower component ``hyperfed.flower.server_app:app``.
app = build_server_app()
