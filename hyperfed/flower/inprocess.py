"""A fast in-process Flower :class:`~flwr.serverapp.Grid`: real messages, no SuperLink, no Ray.

:class:`InProcessGrid` delivers each message by calling the ClientApp of its destination
node directly, in this process, with a per-node :class:`~flwr.app.Context` (node config,
persistent state, the run config). By default every message and reply is deflated to
bytes and inflated again, as on the wire, so what a ClientApp receives is exactly what it
would receive from a SuperLink. A ClientApp that raises becomes an error reply, as a
SuperNode would send.

Flower builds an instruction :class:`~flwr.app.Message` from the process's private
``TaskIdentity`` (run id, node id, task id), which its own runtimes set; this grid sets it
too, which is why ``flwr`` is pinned to one minor version.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict, UserConfig
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from hyperfed.config import RunConfig, RunConfigValue
from hyperfed.federation import AdapterServer, RoundOutcome
from hyperfed.flower import keys
from hyperfed.flower.cache import cached_corpus
from hyperfed.flower.client_app import app as default_client_app
from hyperfed.flower.history import FlowerHistory
from hyperfed.flower.server_app import FinishHook, on_finish, run_recorded, run_server
from hyperfed.flower.strategy import AdapterStrategy

__all__ = ["InProcessGrid", "InProcessRun", "run_inprocess", "wire_roundtrip"]

log = logging.getLogger(__name__)


def wire_roundtrip(message: Message) -> Message:
    """``message`` deflated to bytes and inflated again (as a SuperLink transports it)."""
    message_id = message.metadata.message_id
    contents = {object_id: obj.deflate() for object_id, obj in get_all_nested_objects(message).items()}
    copy = inflate_object_from_contents(message.object_id, contents)
    copy.metadata.__dict__["_message_id"] = message_id  # not serialised: the SuperLink sets it
    return copy  # type: ignore[return-value]


def _node_id(run_id: int, index: int) -> int:
    """A fixed 63-bit node id per (run, node index), never one Flower reserves (0, 1)."""
    digest = hashlib.sha256(f"hyperfed-node\x00{run_id}\x00{index}".encode()).digest()
    return 2 + int.from_bytes(digest[:8], "big") % (2**63 - 2)


class InProcessGrid(Grid):
    """A Grid whose nodes run ClientApps in this process, synchronously.

    Parameters
    ----------
    client_apps
        One ClientApp for every node, or one per node (to plant a faulty client).
    node_configs
        One node config per node (``{"client-id": …}`` or ``{"partition-id": …}``).
    run_config
        The run config every node's context carries.
    run_id
        The run id (also seeds the node ids).
    serialize
        Send every message and reply through bytes, as on the wire.
    """

    def __init__(
        self,
        client_apps: ClientApp | Sequence[ClientApp],
        node_configs: Sequence[UserConfig],
        run_config: UserConfig,
        run_id: int = 1,
        serialize: bool = True,
    ) -> None:
        apps = [client_apps] * len(node_configs) if isinstance(client_apps, ClientApp) else list(client_apps)
        if len(apps) != len(node_configs):
            raise ValueError(f"got {len(apps)} ClientApps for {len(node_configs)} nodes")
        self.serialize = serialize
        self._run = Run.create_empty(run_id)
        self._apps: dict[int, ClientApp] = {}
        self._contexts: dict[int, Context] = {}
        for index, (client_app, node_config) in enumerate(zip(apps, node_configs, strict=True)):
            node = _node_id(run_id, index)
            self._apps[node] = client_app
            self._contexts[node] = Context(run_id, node, dict(node_config), RecordDict(), dict(run_config))
        self._replies: dict[str, Message] = {}
        self._sent = 0
        # What Flower's own runtimes do before a ServerApp creates messages.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SUPERLINK_NODE_ID, 1

    # ------------------------------------------------------------- Grid API
    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._apps)

    def context(self, node_id: int) -> Context:
        """The context (node config, state) of node ``node_id``."""
        return self._contexts[node_id]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver each message now; its reply waits for :meth:`pull_messages`."""
        ids = []
        for message in messages:
            self._sent += 1
            message_id = f"{self._run.run_id}-{self._sent}"
            message.metadata.__dict__["_message_id"] = message_id
            self._replies[message_id] = self._deliver(message)
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push and pull at once (delivery is synchronous, so ``timeout`` never expires)."""
        return self.pull_messages(self.push_messages(messages))

    # -------------------------------------------------------------- delivery
    def _deliver(self, message: Message) -> Message:
        node = message.metadata.dst_node_id
        if node not in self._apps:
            return Message(Error(ErrorCode.NODE_UNAVAILABLE, f"node {node} is not connected"), reply_to=message)
        received = wire_roundtrip(message) if self.serialize else message
        try:
            reply = self._apps[node](received, self._contexts[node])
        except Exception as exc:  # a SuperNode turns any ClientApp exception into an error reply
            log.warning("the ClientApp of node %d raised %s: %s", node, type(exc).__name__, exc)
            log.debug("ClientApp traceback", exc_info=True)
            return Message(
                Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, f"{type(exc).__name__}: {exc}"), reply_to=received
            )
        if not isinstance(reply, Message) or reply.metadata.reply_to_message_id != message.metadata.message_id:
            reason = "the ClientApp did not return a reply to the message it received"
            return Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason), reply_to=received)
        return wire_roundtrip(reply) if self.serialize else reply


@dataclass
class InProcessRun:
    """What :func:`run_inprocess` returns."""

    config: RunConfig
    strategy: AdapterStrategy
    grid: InProcessGrid

    @property
    def server(self) -> AdapterServer:
        return self.strategy.server

    @property
    def history(self) -> FlowerHistory:
        return self.strategy.history


def run_inprocess(
    run_config: Mapping[str, RunConfigValue],
    client_ids: Sequence[str] | None = None,
    *,
    client_apps: ClientApp | Sequence[ClientApp] | None = None,
    server: AdapterServer | None = None,
    serialize: bool = True,
    finish: FinishHook | None = on_finish,
    on_round: Callable[[RoundOutcome], None] | None = None,
) -> InProcessRun:
    """Run the Flower ServerApp logic against in-process ClientApps; return the trained state.

    Parameters
    ----------
    run_config
        A (partial) run config, see :class:`~hyperfed.config.RunConfig`.
    client_ids
        One node per id, identified the deployment way (``client-id`` node config).
        ``None``: one node per corpus client, identified the simulation way (``partition-id``).
    client_apps
        The ClientApp for all nodes, or one per node (default: :data:`client_app.app`).
    server
        A prepared server (e.g. from :func:`~hyperfed.federation.make_server`); default: a
        fresh one built from the run config.
    serialize
        Send messages through bytes as on the wire.
    finish
        Called as ``finish(server, strategy, run_dir, config)`` when ``run-dir`` is set.
    on_round
        Called with each :class:`~hyperfed.federation.RoundOutcome` (recording, progress).
        Without ``server`` and ``on_round`` the run goes exactly as the ServerApp's
        (:func:`~hyperfed.flower.server_app.run_recorded`: a ``run-dir`` is recorded).
    """
    config = RunConfig.from_run_config(run_config)
    if client_ids is None:
        ids = cached_corpus(config.corpus).client_ids
        node_configs: list[UserConfig] = [
            {keys.PARTITION_ID: i, keys.NUM_PARTITIONS: len(ids)} for i in range(len(ids))
        ]
    else:
        node_configs = [{keys.CLIENT_ID: cid} for cid in client_ids]
    config = RunConfig.from_run_config({**config.to_run_config(), "min-nodes": len(node_configs)})
    grid = InProcessGrid(client_apps or default_client_app, node_configs, config.to_run_config(), serialize=serialize)
    if server is None and on_round is None:  # exactly what the ServerApp does (records a run-dir)
        strategy = run_recorded(grid, config)
    else:
        strategy = run_server(grid, config, server, on_round)
    if config.run_dir and finish is not None:
        finish(strategy.server, strategy, Path(config.run_dir), config)
    return InProcessRun(config=config, strategy=strategy, grid=grid)
