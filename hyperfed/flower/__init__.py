"""Flower layer: the HyperFed strategy, ServerApp and ClientApp, and three ways to run them.

* in process — :func:`run_inprocess` on an :class:`InProcessGrid` (fast; tests and the demo);
* ``flwr run`` on a local Simulation Engine — :func:`run_flwr_simulation`;
* a SuperLink with SuperNodes (across machines; :func:`run_loopback_deployment` on one).

Flower components: ``hyperfed.flower.server_app:app`` and ``hyperfed.flower.client_app:app``;
the Flower app project (a ``pyproject.toml`` only) is :data:`APP_DIR`.
"""

from hyperfed.flower.client_app import build_client_app
from hyperfed.flower.directory import ClientDirectory
from hyperfed.flower.errors import ClientIdentityError, FlowerRunError, MalformedReplyError
from hyperfed.flower.history import FlowerHistory
from hyperfed.flower.inprocess import InProcessGrid, InProcessRun, run_inprocess
from hyperfed.flower.launch import (
    APP_DIR,
    FlowerRunResult,
    loopback_deployment,
    run_flwr_simulation,
    run_loopback_deployment,
)
from hyperfed.flower.records import adapter_to_record, content_to_reply, record_to_adapter, reply_to_content
from hyperfed.flower.server_app import build_server_app, on_finish, run_recorded, run_server
from hyperfed.flower.strategy import AdapterStrategy, HyperLoRAStrategy, run_strategy

__all__ = [
    "AdapterStrategy",
    "HyperLoRAStrategy",
    "ClientDirectory",
    "run_strategy",
    "run_recorded",
    "FlowerHistory",
    "InProcessGrid",
    "InProcessRun",
    "run_inprocess",
    "run_flwr_simulation",
    "run_loopback_deployment",
    "loopback_deployment",
    "FlowerRunResult",
    "APP_DIR",
    "run_server",
    "on_finish",
    "build_server_app",
    "build_client_app",
    "adapter_to_record",
    "record_to_adapter",
    "reply_to_content",
    "content_to_reply",
    "MalformedReplyError",
    "ClientIdentityError",
    "FlowerRunError",
]
