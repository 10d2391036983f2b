"""Start, watch and stop Flower's own processes: SuperLink, SuperNodes and the ``flwr`` CLI.

Every process is started by us in its own session, logs to a file, and is stopped by pid
together with the processes it started (SuperExec, ``flwr-simulation``/``flwr-serverapp``,
``flwr-clientapp``, Ray), so nothing outlives a run. Every port is a free one picked at
start, so runs never collide with each other or with anybody's default SuperLink, and
``FLWR_HOME`` is a folder of the run, so no user-level Flower state is touched.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from hyperfed.flower.errors import FlowerRunError

__all__ = [
    "FlowerProcess",
    "flower_env",
    "free_port",
    "start_superlink",
    "start_supernode",
    "write_connection",
    "node_config_arg",
    "flwr_run",
    "run_status",
]

log = logging.getLogger(__name__)

_RUN_ID = re.compile(r"Successfully started run (\d+)")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _executable(name: str) -> str:
    """A Flower executable from this interpreter's environment (not whatever is on PATH)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FlowerRunError(f"{name} not found beside {sys.executable}; install flwr in this environment")
    return str(path)


def flower_env(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower processes of one run.

    ``FLWR_HOME`` is the run's own folder; runtime dependency installation (``uv sync`` of
    the app's dependencies, which would download a CUDA torch) is off; update checks and
    telemetry are off (no network); this environment's executables come first on PATH,
    because the SuperLink and SuperNodes start ``flower-superexec`` by name.
    """
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class FlowerProcess:
    """A Flower process we started, with its log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    address: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process and every process it started (by pid), then reap them."""
        try:
            tree = [psutil.Process(self.pid), *psutil.Process(self.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for proc in tree:  # parent first: a SuperLink stops its SuperExec itself
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(tree, timeout=timeout)
        for proc in alive:
            log.warning("%s: pid %d did not stop in %.0f s; killing it", self.name, proc.pid, timeout)
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=timeout)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.error("%s: pid %d could not be reaped", self.name, self.pid)


def _start(name: str, argv: list[str], env: Mapping[str, str], log_path: Path) -> FlowerProcess:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as sink:
        popen = subprocess.Popen(
            argv, env=dict(env), stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    log.info("started %s (pid %d), log %s", name, popen.pid, log_path)
    return FlowerProcess(name, popen, log_path)


def _wait_healthy(process: FlowerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    url = f"http://{process.address}/health"
    while time.monotonic() < deadline:
        if not process.alive():
            code = process.popen.returncode
            raise FlowerRunError(
                f"{process.name} exited with code {code}; log {process.log_path}:\n{process.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    process.stop()
    raise FlowerRunError(f"{process.name} did not become healthy within {timeout:.0f} s; log {process.log_path}")


def start_superlink(
    flwr_home: Path,
    log_dir: Path,
    *,
    simulation: bool,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 60.0,
    extra_env: Mapping[str, str] | None = None,
) -> FlowerProcess:
    """Start ``flower-superlink --insecure`` (``--simulation`` for the Simulation Engine).

    Its HTTP API (Control, ServerAppIo and Fleet APIs share one port in Flower 1.42) listens
    on ``host:port`` (a free port by default). Returns once its health endpoint answers.
    """
    port = port or free_port(host)
    argv = [_executable("flower-superlink"), "--insecure", "--host", host, "--port", str(port)]
    if simulation:
        argv.append("--simulation")
    process = _start("SuperLink", argv, flower_env(flwr_home, extra_env), log_dir / "superlink.log")
    process.address = f"{host}:{port}"
    _wait_healthy(process, timeout)
    return process


def node_config_arg(node_config: Mapping[str, str | int | float | bool]) -> str:
    """``{"client-id": "code/asyncio"}`` → ``client-id='code/asyncio'`` (``--node-config``)."""
    parts = []
    for key, value in node_config.items():
        if isinstance(value, str):
            if "'" in value or '"' in value:
                raise FlowerRunError(f"node-config value {value!r} must not contain quotes")
            parts.append(f"{key}='{value}'")
        else:
            parts.append(f"{key}={json.dumps(value)}")
    return " ".join(parts)


def start_supernode(
    flwr_home: Path,
    superlink_address: str,
    node_config: Mapping[str, str | int | float | bool],
    log_path: Path,
    *,
    port: int | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> FlowerProcess:
    """Start ``flower-supernode --insecure`` connected to ``superlink_address``.

    ``port`` is the SuperNode's own runtime API port (free one by default: several
    SuperNodes on one machine need distinct ports).
    """
    argv = [
        _executable("flower-supernode"),
        "--insecure",
        "--superlink",
        superlink_address,
        "--port",
        str(port or free_port()),
        "--node-config",
        node_config_arg(node_config),
    ]
    return _start("SuperNode", argv, flower_env(flwr_home, extra_env), log_path)


def write_connection(flwr_home: Path, name: str, address: str) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with one insecure SuperLink connection, the default.

    (Flower 1.42 keeps SuperLink connections here; ``[tool.flwr.federations]`` in an app's
    pyproject.toml is legacy, and ``flwr run`` would rewrite the file to migrate it.)
    """
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "{address}"\ninsecure = true\n')
    return path


def _cli(
    args: list[str], env: Mapping[str, str], timeout: float, log_path: Path | None = None
) -> subprocess.CompletedProcess:
    argv = [_executable("flwr"), *args]
    try:
        if log_path is None:
            return subprocess.run(argv, env=dict(env), capture_output=True, text=True, timeout=timeout, check=False)
        with open(log_path, "a") as sink:
            return subprocess.run(
                argv, env=dict(env), stdout=sink, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False
            )
    except subprocess.TimeoutExpired:
        where = f"; log {log_path}" if log_path else ""
        raise FlowerRunError(f"`flwr {args[0]}` did not finish within {timeout:.0f} s{where}") from None


def flwr_run(
    app_dir: Path,
    connection: str,
    env: Mapping[str, str],
    run_config_file: Path,
    log_path: Path,
    timeout: float,
    federation_config: Mapping[str, int | float | str | bool] | None = None,
) -> int:
    """``flwr run APP CONNECTION --run-config FILE [--federation-config …] --stream``.

    Blocks until the run ends (``--stream`` follows its logs into ``log_path``) and
    returns the run id.

    Raises
    ------
    FlowerRunError
        If the run could not be started or did not end within ``timeout`` seconds.
    """
    args = ["run", str(app_dir), connection, "--run-config", str(run_config_file), "--stream"]
    if federation_config:
        args += ["--federation-config", " ".join(f"{k}={json.dumps(v)}" for k, v in federation_config.items())]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    result = _cli(args, env, timeout, log_path)
    match = _RUN_ID.search(log_path.read_text(errors="replace"))
    if match is None:
        raise FlowerRunError(f"`flwr run` did not start a run (exit code {result.returncode}); log {log_path}")
    return int(match.group(1))


def run_status(connection: str, run_id: int, env: Mapping[str, str], timeout: float = 60.0) -> str:
    """The status of a run as ``flwr ls`` reports it, e.g. ``finished:completed``."""
    result = _cli(["ls", connection, "--run-id", str(run_id), "--format", "json"], env, timeout)
    try:
        runs = json.loads(result.stdout)["runs"]
        return str(runs[0]["status"])
    except (ValueError, KeyError, IndexError):
        output = f"{result.stdout[-500:]} {result.stderr[-500:]}"
        raise FlowerRunError(f"`flwr ls` gave no status for run {run_id}: {output}") from None
