"""Run the Flower app for real with ``flwr run``: Simulation Engine, or SuperLink + SuperNodes.

Both functions start their own SuperLink on a free port with a per-run ``FLWR_HOME``,
drive ``flwr run`` as a subprocess with a timeout, read the ServerApp's ``metrics.json``
back, and stop every process they started (by pid) whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hyperfed.config import RunConfig, RunConfigValue
from hyperfed.flower import keys
from hyperfed.flower.cache import load_base_model
from hyperfed.flower.errors import FlowerRunError
from hyperfed.flower.processes import (
    FlowerProcess,
    flower_env,
    flwr_run,
    run_status,
    start_superlink,
    start_supernode,
    write_connection,
)
from hyperfed.flower.server_app import METRICS_FILE

__all__ = [
    "APP_DIR",
    "FlowerRunResult",
    "run_flwr_simulation",
    "loopback_deployment",
    "run_loopback_deployment",
    "write_run_config",
]

log = logging.getLogger(__name__)

#: The Flower app project: a folder holding only ``pyproject.toml``.
APP_DIR = Path(__file__).resolve().parent / "app"
_CONNECTION = "hyperfed"
_COMPLETED = "finished:completed"
# Several ClientApp processes on one machine: one intra-op thread each, as Ray gives its actors.
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass
class FlowerRunResult:
    """The outcome of a ``flwr run``.

    Attributes
    ----------
    run_id
        Flower's run id.
    status
        Flower's final status (``finished:completed`` on success).
    run_dir
        The run folder: ``metrics.json``, ``run-config.toml``, ``logs/``, ``flwr-home/``.
    metrics
        The parsed ``metrics.json`` the ServerApp wrote.
    seconds
        Wall time of ``flwr run`` (SuperLink start-up excluded).
    """

    run_id: int
    status: str
    run_dir: Path
    metrics: dict[str, Any]
    seconds: float

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"


def write_run_config(config: RunConfig, path: Path, extra: Mapping[str, RunConfigValue] | None = None) -> Path:
    """Write ``config`` (and ``extra`` keys, e.g. :data:`~hyperfed.flower.keys.REPLAY_DEFAULTS`'
    ones) as the TOML file ``flwr run --run-config`` takes."""
    import tomli_w  # a dependency of flwr's CLI

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps({**config.to_run_config(), **(extra or {})}))
    return path


def _prepare(run_config: Mapping[str, RunConfigValue], run_dir: str | Path, min_nodes: int) -> tuple[RunConfig, Path]:
    run_dir = Path(run_dir).resolve()
    config = RunConfig.from_run_config({**run_config, "run-dir": str(run_dir), "min-nodes": min_nodes})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / METRICS_FILE).unlink(missing_ok=True)  # never report a previous run's results
    # Build the cached base model once here rather than racing to build it in every node.
    load_base_model(config.base_model)
    write_run_config(config, run_dir / "run-config.toml")
    return config, run_dir


def _execute(
    run_dir: Path, superlink: FlowerProcess, timeout: float, federation_config: Mapping[str, Any] | None
) -> FlowerRunResult:
    flwr_home = run_dir / "flwr-home"
    env = flower_env(flwr_home)
    write_connection(flwr_home, _CONNECTION, superlink.address)
    start = time.perf_counter()
    log_path = run_dir / "logs" / "flwr-run.log"
    run_id = flwr_run(APP_DIR, _CONNECTION, env, run_dir / "run-config.toml", log_path, timeout, federation_config)
    seconds = time.perf_counter() - start
    status = run_status(_CONNECTION, run_id, env)
    metrics_path = run_dir / METRICS_FILE
    if status != _COMPLETED or not metrics_path.exists():
        written = metrics_path.exists()
        raise FlowerRunError(f"run {run_id} ended with status {status!r} (metrics written: {written}); see {log_path}")
    log.info("flwr run %d finished in %.1f s", run_id, seconds)
    return FlowerRunResult(run_id, status, run_dir, json.loads(metrics_path.read_text()), seconds)


def run_flwr_simulation(
    run_config: Mapping[str, RunConfigValue],
    num_supernodes: int,
    run_dir: str | Path,
    *,
    timeout: float = 900.0,
    cpus_per_client: int = 1,
    ray_cpus: int | None = None,
) -> FlowerRunResult:
    """``flwr run`` the app on a local Simulation Engine (Ray) and return its results.

    Parameters
    ----------
    run_config
        A (partial) run config (:class:`~hyperfed.config.RunConfig` keys);
        ``run-dir`` and ``min-nodes`` are set from the arguments.
    num_supernodes
        Virtual SuperNodes; node *i* is corpus client *i* (``partition-id``).
    run_dir
        Results, logs and this run's ``FLWR_HOME``.
    timeout
        Seconds for the whole run; on expiry everything is stopped and
        :class:`~hyperfed.flower.errors.FlowerRunError` raised.
    cpus_per_client
        Ray CPUs per ClientApp (1 lets ``ray_cpus`` clients train at once).
    ray_cpus
        CPUs Ray may use (default: ``min(num_supernodes * cpus_per_client, cpu count)``).

    Raises
    ------
    FlowerRunError
        If the SuperLink does not start, the run fails or times out, or writes no metrics.
    MissingExtraError
        If Ray is not installed (``pip install 'hyperfed[simulation]'``).
    """
    from hyperfed.extras import require_extra

    require_extra("simulation", "ray", feature="`flwr run` on the Simulation Engine")
    _, run_dir = _prepare(run_config, run_dir, num_supernodes)
    federation_config = {
        "num-supernodes": num_supernodes,
        "client-resources-num-cpus": cpus_per_client,
        "init-args-num-cpus": ray_cpus or max(1, min(num_supernodes * cpus_per_client, os.cpu_count() or 1)),
    }
    superlink = start_superlink(run_dir / "flwr-home", run_dir / "logs", simulation=True)
    try:
        return _execute(run_dir, superlink, timeout, federation_config)
    finally:
        superlink.stop()


@contextlib.contextmanager
def loopback_deployment(client_ids: Sequence[str], home: str | Path) -> Iterator[FlowerProcess]:
    """One SuperLink and one SuperNode per client id on this machine, for the ``with`` block;
    yields the SuperLink (its ``address`` is the Control API a ``flwr run`` or
    ``hyperfed forget --superlink`` talks to). Logs go to ``home/logs/``; every process is
    stopped at the end, whatever happens.

    Each SuperNode is started as a user would on their own machine,
    ``flower-supernode --insecure --superlink HOST:PORT --node-config "client-id='…'"``.
    """
    home = Path(home)
    superlink = start_superlink(home / "flwr-home", home / "logs", simulation=False)
    supernodes: list[FlowerProcess] = []
    try:
        for index, client_id in enumerate(client_ids):
            log_path = home / "logs" / f"supernode-{index}.log"
            node_home = home / f"flwr-home-node-{index}"  # as on its own machine
            supernodes.append(
                start_supernode(
                    node_home, superlink.address, {keys.CLIENT_ID: client_id}, log_path, extra_env=_ONE_THREAD
                )
            )
        yield superlink
    finally:
        for process in [*supernodes, superlink]:
            process.stop()


def run_loopback_deployment(
    run_config: Mapping[str, RunConfigValue],
    client_ids: Sequence[str],
    run_dir: str | Path,
    *,
    timeout: float = 900.0,
) -> FlowerRunResult:
    """A real deployment on this machine (:func:`loopback_deployment`), the run submitted
    with ``flwr run`` (no Simulation Engine involved).

    Raises
    ------
    FlowerRunError
        If a process does not start, the run fails or times out, or writes no metrics.
    """
    _, run_dir = _prepare(run_config, run_dir, len(client_ids))
    with loopback_deployment(client_ids, run_dir) as superlink:
        return _execute(run_dir, superlink, timeout, None)
