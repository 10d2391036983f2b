"""The Flower strategy: a thin FedAvg subclass over a Flower-free :class:`AdapterServer`.

One class drives all three methods, so HyperLoRA, FedAvg-LoRA and local-only run the same
protocol, sampling and budget and differ only in the server they hold:

* ``configure_train`` — Poisson-sample the known *user* client ids (hash of seed, round,
  id: what makes exact unlearning possible), ask the server for each sampled client's
  adapter and build one message per node carrying that client's own adapter;
* ``aggregate_train`` — map each reply's ``src_node_id`` back to its client id, turn the
  reply into a :class:`~hyperfed.federation.Reply` and let the server screen and learn;
  error replies, undecodable replies and missing replies are rejected with a logged reason
  and the round goes on;
* ``configure_evaluate`` / ``aggregate_evaluate`` — every client evaluates the adapter the
  server would give it now; per-client losses are kept in :attr:`AdapterStrategy.history`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from hyperfed.federation import AdapterServer, FedAvgLoRAServer, Reply, RoundOutcome, poisson_sample
from hyperfed.flower import keys
from hyperfed.flower.errors import ClientIdentityError, MalformedReplyError
from hyperfed.flower.handshake import query_client_ids
from hyperfed.flower.history import FlowerHistory
from hyperfed.flower.records import adapter_to_record, content_to_eval, content_to_reply

__all__ = ["AdapterStrategy", "HyperLoRAStrategy"]

log = logging.getLogger(__name__)


class AdapterStrategy(FedAvg):
    """Personalised federated LoRA on Flower's message API.

    Parameters
    ----------
    server
        The method's server logic (:func:`hyperfed.federation.make_server`): a
        ``HyperLoRAServer`` makes this pFedHN with a hypernetwork, a ``FedAvgLoRAServer``
        or ``LocalOnlyServer`` the baselines. Its ``config`` gives rounds, sample rate, seed.
    min_nodes
        Nodes to wait for before the handshake.
    evaluate_every
        Evaluate all clients every this many rounds and after the last (``0``: last only).
    evaluate_before_training
        Also evaluate every client before round 1 (stored as round 0).

    Attributes
    ----------
    history : FlowerHistory
        Handshake, sampling, round outcomes and per-client evaluation losses.
    """

    def __init__(
        self,
        server: AdapterServer,
        *,
        min_nodes: int = 1,
        evaluate_every: int = 1,
        evaluate_before_training: bool = True,
        on_round: Callable[[RoundOutcome], None] | None = None,
    ) -> None:
        super().__init__(
            min_train_nodes=0,
            min_evaluate_nodes=0,
            min_available_nodes=min_nodes,
            weighted_by_key=keys.NUM_EXAMPLES,
            arrayrecord_key=keys.ARRAYS,
            configrecord_key=keys.CONFIG,
        )
        self.server = server
        self.evaluate_every = evaluate_every
        self.evaluate_before_training = evaluate_before_training
        self.on_round = on_round  # called after each round is learned (recording, progress)
        self.history = FlowerHistory()
        self.node_of: dict[str, int] = {}  # user client id → Flower node id
        self.client_of: dict[int, str] = {}  # Flower node id → user client id
        self._failed_nodes: set[int] = set()  # nodes that failed the handshake: not asked again
        self._timeout = 3600.0
        self._num_rounds = server.config.rounds
        self._round_started: dict[int, float] = {}

    # ------------------------------------------------------------------ lifecycle
    def summary(self) -> None:
        """Log the method and sampling (Flower calls this at start)."""
        cfg = self.server.config
        name = type(self).__name__
        log.info("%s: method %s, Poisson sample rate %.2f, seed %d", name, self.server.method, cfg.sample_rate, cfg.seed)
        log.info("known clients: %d (%s)", len(self.node_of), ", ".join(sorted(self.node_of)) or "none")

    def start(  # type: ignore[override]  # initial_arrays and num_rounds become optional
        self,
        grid: Grid,
        initial_arrays: ArrayRecord | None = None,
        num_rounds: int | None = None,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Handshake, optionally evaluate (round 0), then run Flower's round loop.

        ``num_rounds`` defaults to the server config's ``rounds``; ``initial_arrays`` to an
        empty record (personalised methods have no global model to broadcast).
        """
        self._timeout = float(timeout)
        self._num_rounds = num_rounds or self.server.config.rounds
        self.connect(grid, timeout)
        if self.evaluate_before_training:
            messages = self._evaluation_messages(0, evaluate_config or ConfigRecord(), grid)
            self.aggregate_evaluate(0, grid.send_and_receive(messages, timeout=timeout))
        arrays = initial_arrays or ArrayRecord()
        return super().start(grid, arrays, self._num_rounds, timeout, train_config, evaluate_config, evaluate_fn)

    def connect(self, grid: Grid, timeout: float | None = None) -> dict[str, int]:
        """Wait for ``min_nodes`` nodes (at most ``timeout`` s), handshake, register the clients.

        Returns
        -------
        dict[str, int]
            ``client id → node id`` of every identified client.

        Raises
        ------
        ClientIdentityError
            If no node identified itself.
        """
        self._wait_for_nodes(grid, self._timeout if timeout is None else timeout)
        self.identify_new_nodes(grid, timeout)
        if not self.node_of:
            raise ClientIdentityError("no node answered the client-id handshake; see the warnings above")
        return dict(self.node_of)

    def _wait_for_nodes(self, grid: Grid, timeout: float) -> None:
        """Like Flower's ``sample_nodes(grid, min_nodes, 0)`` (the node list starts empty),
        but gives up after ``timeout`` seconds and goes on with the nodes that came."""
        deadline = time.monotonic() + timeout
        while (connected := len(list(grid.get_node_ids()))) < self.min_available_nodes:
            if time.monotonic() >= deadline:
                wanted = self.min_available_nodes
                log.warning("only %d of %d nodes connected within %.0f s; going on with them", connected, wanted, timeout)
                return
            log.info("waiting for nodes: %d of %d connected", connected, self.min_available_nodes)
            time.sleep(1.0)

    def identify_new_nodes(self, grid: Grid, timeout: float | None = None) -> list[str]:
        """Handshake with nodes not seen before; return the newly registered client ids.

        A client that reconnects under a new node id is remapped; a second live node
        claiming an id that another live node holds is ignored with an error in the log.
        """
        present = set(grid.get_node_ids())
        new = sorted(present - set(self.client_of) - self._failed_nodes)
        if not new:
            return []
        found = query_client_ids(grid, new, self._timeout if timeout is None else timeout)
        self._failed_nodes |= set(new) - set(found)
        added = []
        for node, client_id in sorted(found.items()):
            old = self.node_of.get(client_id)
            if old is not None and old in present:
                log.error("nodes %d and %d both claim client id %r; ignoring node %d", old, node, client_id, node)
                self._failed_nodes.add(node)
                continue
            if old is not None:
                log.info("client %r reconnected as node %d (was %d)", client_id, node, old)
                del self.client_of[old]
            self.node_of[client_id] = node
            self.client_of[node] = client_id
            added.append(client_id)
        self.server.register(sorted(added))
        self.history.clients = dict(sorted(self.node_of.items()))
        log.info("handshake: %d new clients, %d known", len(added), len(self.node_of))
        return added

    # ---------------------------------------------------------------- training
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """One message per sampled client, each with that client's own adapter."""
        self._round_started[server_round] = time.perf_counter()
        self.identify_new_nodes(grid)
        ids = sorted(self.node_of)  # id order: independent of node ids and arrival order
        sampled = poisson_sample(self.server.config.seed, server_round, ids, self.server.config.sample_rate)
        self.history.sampled[server_round] = sampled
        sent = self.server.configure_round(server_round, sampled)
        log.info("round %d: sampled %d of %d clients", server_round, len(sampled), len(ids))
        return self._messages(sent, MessageType.TRAIN, server_round, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen the replies, let the server learn from the accepted ones.

        Returns ``(arrays, metrics)``: ``arrays`` is the new shared adapter for FedAvg-LoRA
        and ``None`` for the personalised methods (nothing global to publish).
        """
        sampled = self.history.sampled.get(server_round, [])
        received: dict[str, Reply] = {}
        rejected: dict[str, str] = {}
        for message in replies:
            client_id = self.client_of.get(message.metadata.src_node_id)
            if client_id not in sampled or client_id in received or client_id in rejected:
                log.warning("round %d: ignoring an unexpected reply from node %d", server_round, message.metadata.src_node_id)
                continue
            if message.has_error():
                rejected[client_id] = f"the client reported an error (code {message.error.code}): {message.error.reason}"
                continue
            try:
                received[client_id] = content_to_reply(message.content)
            except MalformedReplyError as exc:
                rejected[client_id] = str(exc)
        for client_id in sampled:
            if client_id not in received and client_id not in rejected:
                rejected[client_id] = "no reply within the round timeout"
        for client_id, reason in rejected.items():
            log.warning("rejected the reply of client %r in round %d: %s", client_id, server_round, reason)
        # Learn in sampling order, so the result does not depend on reply arrival order.
        outcome = self.server.aggregate_round(server_round, {c: received[c] for c in sampled if c in received})
        outcome.rejected.update(rejected)
        self.history.rounds.append(outcome)
        started = self._round_started.pop(server_round, time.perf_counter())
        self.history.round_seconds[server_round] = time.perf_counter() - started
        counts = {"num-sampled": len(sampled), "num-accepted": len(outcome.accepted), "num-rejected": len(outcome.rejected)}
        metrics = MetricRecord(counts)
        if outcome.accepted:
            metrics[keys.TRAIN_LOSS] = float(outcome.train_loss)
        if self.on_round is not None:
            self.on_round(outcome)
        arrays = None
        if isinstance(self.server, FedAvgLoRAServer) and outcome.accepted:
            arrays = adapter_to_record(self.server.global_adapter)
        return arrays, metrics

    # -------------------------------------------------------------- evaluation
    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid) -> Iterable[Message]:
        """Every connected client gets the adapter the server would give it now."""
        last = server_round == self._num_rounds
        periodic = self.evaluate_every > 0 and server_round % self.evaluate_every == 0
        if not (last or periodic):
            return []
        return self._evaluation_messages(server_round, config, grid)

    def _evaluation_messages(self, server_round: int, config: ConfigRecord, grid: Grid) -> list[Message]:
        self.identify_new_nodes(grid)
        present = set(grid.get_node_ids())
        ids = [cid for cid in sorted(self.node_of) if self.node_of[cid] in present]
        return self._messages(self._current_adapters(ids), MessageType.EVALUATE, server_round, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Store each client's loss in ``history.eval_losses[server_round]``; return the mean."""
        losses: dict[str, float] = {}
        for message in replies:
            client_id = self.client_of.get(message.metadata.src_node_id)
            if client_id is None:
                continue
            if message.has_error():
                log.warning("client %r failed to evaluate in round %d: %s", client_id, server_round, message.error.reason)
                continue
            try:
                losses[client_id] = content_to_eval(message.content)[0]
            except MalformedReplyError as exc:
                log.warning("ignoring the evaluation of client %r in round %d: %s", client_id, server_round, exc)
        if not losses:
            return None
        self.history.eval_losses[server_round] = dict(sorted(losses.items()))
        mean = self.history.mean_eval_loss(server_round)
        log.info("round %d: mean eval loss %.4f over %d clients", server_round, mean, len(losses))
        return MetricRecord({keys.EVAL_LOSS: mean, "num-clients": len(losses)})

    # ----------------------------------------------------------------- helpers
    def _current_adapters(self, client_ids: Sequence[str]) -> Mapping[str, Mapping]:
        batched = getattr(self.server, "adapters_for", None)  # HyperLoRA: one batched generation
        if batched is not None and client_ids:
            return batched(client_ids)
        return {cid: self.server.adapter_for(cid) for cid in client_ids}

    def _messages(
        self, adapters: Mapping[str, Mapping], message_type: str, server_round: int, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        present = set(grid.get_node_ids())
        messages = []
        for client_id, adapter in adapters.items():
            node = self.node_of.get(client_id)
            if node not in present:
                log.warning("round %d: client %r has no connected node; not sent", server_round, client_id)
                continue
            content = RecordDict(
                {
                    keys.ARRAYS: adapter_to_record(adapter),
                    keys.CONFIG: ConfigRecord({**config, keys.SERVER_ROUND: server_round, keys.CLIENT_ID: client_id}),
                }
            )
            messages.append(Message(content, dst_node_id=node, message_type=message_type, group_id=str(server_round)))
        return messages


#: The documented name: with a ``HyperLoRAServer`` this *is* the HyperLoRA strategy; the
#: same class with a ``FedAvgLoRAServer`` or ``LocalOnlyServer`` runs the baselines.
HyperLoRAStrategy = AdapterStrategy
