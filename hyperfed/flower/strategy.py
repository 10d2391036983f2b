"""The Flower strategy: a thin FedAvg subclass over a Flower-free :class:`AdapterServer`.

One class drives every registered method, so HyperLoRA and the baselines run the same
protocol, sampling and budget and differ only in the server they hold. It overrides only
Flower's four round hooks; the handshake before round 1 is :func:`run_strategy`'s, and the
``client id ↔ node id`` mapping is a :class:`~hyperfed.flower.directory.ClientDirectory`:

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

import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from hyperfed.federation import AdapterServer, Reply, RoundOutcome, poisson_sample
from hyperfed.flower import keys
from hyperfed.flower.directory import ClientDirectory, wait_for_nodes
from hyperfed.flower.errors import MalformedReplyError
from hyperfed.flower.history import FlowerHistory
from hyperfed.flower.records import adapter_to_record, content_to_evaluation, content_to_reply

__all__ = ["AdapterStrategy", "HyperLoRAStrategy", "run_strategy"]

log = logging.getLogger(__name__)


class AdapterStrategy(FedAvg):
    """Personalised federated LoRA on Flower's message API.

    Parameters
    ----------
    server
        The method's server logic (:func:`hyperfed.federation.make_server`); its ``config``
        gives rounds, sample rate and seed.
    directory
        Which client runs on which node (default: a new, empty one).
    min_nodes
        Nodes to wait for before the handshake.
    evaluate_every
        Evaluate all clients every this many rounds and after the last (``0``: last only).
    on_round
        Called with each round's :class:`~hyperfed.federation.RoundOutcome` once the server
        has learned from it (recording, progress).
    evaluate_last
        Evaluate after the last round too (an exact forget's replay skips it: nobody reads it).
    first_round
        The run's round that Flower's round 1 is (an exact forget's replay resumes a run at
        its client's first round): sampling, client seeds, history and ``on_round`` all see
        the run's own round numbers, ``first_round .. server.config.rounds``.

    Attributes
    ----------
    history : FlowerHistory
        Handshake, sampling, round outcomes and per-client evaluation losses.
    """

    def __init__(
        self,
        server: AdapterServer,
        *,
        directory: ClientDirectory | None = None,
        min_nodes: int = 1,
        evaluate_every: int = 1,
        on_round: Callable[[RoundOutcome], None] | None = None,
        evaluate_last: bool = True,
        first_round: int = 1,
    ) -> None:
        if not 1 <= first_round <= server.config.rounds:
            raise ValueError(f"first_round must be in 1..{server.config.rounds}, got {first_round}")
        super().__init__(
            min_train_nodes=0,
            min_evaluate_nodes=0,
            min_available_nodes=min_nodes,
            weighted_by_key=keys.NUM_EXAMPLES,
            arrayrecord_key=keys.ARRAYS,
            configrecord_key=keys.CONFIG,
        )
        self.server = server
        self.directory = directory if directory is not None else ClientDirectory()  # an empty one is falsy
        self.evaluate_every = evaluate_every
        self.evaluate_last = evaluate_last
        self.on_round = on_round
        self.first_round = first_round
        self.history = FlowerHistory()
        self._round_started: dict[int, float] = {}

    @property
    def num_rounds(self) -> int:
        """Rounds Flower runs: the run's rounds from :attr:`first_round` on."""
        return self.server.config.rounds - self.first_round + 1

    def run_round(self, flower_round: int) -> int:
        """The run's round number of Flower's round ``flower_round``."""
        return flower_round + self.first_round - 1

    def identify_new_nodes(self, grid: Grid) -> list[str]:
        """Handshake with new nodes and register their clients on the server."""
        added = self.directory.identify_new_nodes(grid)
        self.server.register(added)
        self.history.clients = dict(sorted(self.directory.node_of.items()))
        return added

    # ---------------------------------------------------------------- training
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """One message per sampled client, each with that client's own adapter."""
        server_round = self.run_round(server_round)
        self._round_started[server_round] = time.perf_counter()
        self.identify_new_nodes(grid)
        ids = self.directory.client_ids()  # id order: independent of node ids and arrival order
        sampled = poisson_sample(self.server.config.seed, server_round, ids, self.server.config.sample_rate)
        self.history.sampled[server_round] = sampled
        sent = self.server.configure_round(server_round, sampled)
        log.info("round %d: sampled %d of %d clients", server_round, len(sampled), len(ids))
        return self._messages(sent, MessageType.TRAIN, server_round, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen the replies, let the server learn from the accepted ones.

        Returns ``(arrays, metrics)``: ``arrays`` is the new shared adapter for FedAvg-LoRA
        and ``None`` for the personalised methods (nothing global to publish).
        """
        server_round = self.run_round(server_round)
        sampled = self.history.sampled.get(server_round, [])
        received: dict[str, Reply] = {}
        rejected: dict[str, str] = {}
        for message in replies:
            client_id = self.directory.client_of.get(message.metadata.src_node_id)
            if client_id not in sampled or client_id in received or client_id in rejected:
                log.warning(
                    "round %d: ignoring an unexpected reply from node %d", server_round, message.metadata.src_node_id
                )
                continue
            if message.has_error():
                rejected[client_id] = (
                    f"the client reported an error (code {message.error.code}): {message.error.reason}"
                )
                continue
            try:
                received[client_id] = content_to_reply(message.content)
            except MalformedReplyError as exc:
                rejected[client_id] = str(exc)
            except Exception as exc:  # the last resort: an undecodable reply is a rejection, not a failed round
                log.warning("round %d: the reply of client %r did not decode", server_round, client_id, exc_info=True)
                rejected[client_id] = f"the reply could not be decoded ({type(exc).__name__}: {exc})"
        for client_id in sampled:
            if client_id not in received and client_id not in rejected:
                rejected[client_id] = "no reply within the round timeout"
        for client_id, reason in rejected.items():
            log.warning("rejected the reply of client %r in round %d: %s", client_id, server_round, reason)
        # Learn in sampling order, so the result does not depend on reply arrival order.
        outcome = self.server.aggregate_round(server_round, {c: received[c] for c in sampled if c in received})
        outcome.rejected.update(rejected)
        self.history.rounds.append(dataclasses.replace(outcome, sent={}))  # the history keeps no weights
        started = self._round_started.pop(server_round, time.perf_counter())
        self.history.round_seconds[server_round] = time.perf_counter() - started
        counts = {
            "num-sampled": len(sampled),
            "num-accepted": len(outcome.accepted),
            "num-rejected": len(outcome.rejected),
        }
        metrics = MetricRecord(counts)
        if outcome.accepted:
            metrics[keys.TRAIN_LOSS] = float(outcome.train_loss)
        if self.on_round is not None:
            self.on_round(outcome)
        published = self.server.published_adapter() if outcome.accepted else None
        return (None if published is None else adapter_to_record(published)), metrics

    # -------------------------------------------------------------- evaluation
    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Every connected client gets the adapter the server would give it now."""
        server_round = self.run_round(server_round)
        last = self.evaluate_last and server_round == self.server.config.rounds
        periodic = self.evaluate_every > 0 and server_round % self.evaluate_every == 0
        if not (last or periodic):
            return []
        return self.evaluation_messages(server_round, config, grid)

    def evaluation_messages(self, server_round: int, config: ConfigRecord, grid: Grid) -> list[Message]:
        self.identify_new_nodes(grid)
        ids = self.directory.connected(grid)
        return self._messages(
            self.server.adapters_for(ids) if ids else {}, MessageType.EVALUATE, server_round, config, grid
        )

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Flower's hook: :meth:`record_evaluation` of the run's round."""
        return self.record_evaluation(self.run_round(server_round), replies)

    def record_evaluation(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Store each client's validation loss in ``history.eval_losses[server_round]`` (test
        loss in ``history.test_losses``, fine-tune steps in ``history.finetune_steps``); return
        the mean validation loss."""
        losses: dict[str, float] = {}
        tests: dict[str, float] = {}
        steps: dict[str, int] = {}
        for message in replies:
            client_id = self.directory.client_of.get(message.metadata.src_node_id)
            if client_id is None:
                continue
            if message.has_error():
                log.warning(
                    "client %r failed to evaluate in round %d: %s", client_id, server_round, message.error.reason
                )
                continue
            try:
                evaluation = content_to_evaluation(message.content)
            except MalformedReplyError as exc:
                log.warning("ignoring the evaluation of client %r in round %d: %s", client_id, server_round, exc)
                continue
            losses[client_id] = evaluation.val
            steps[client_id] = evaluation.finetune_steps
            if evaluation.test is not None:
                tests[client_id] = evaluation.test
        if not losses:
            return None
        self.history.eval_losses[server_round] = dict(sorted(losses.items()))
        self.history.finetune_steps[server_round] = dict(sorted(steps.items()))
        if tests:
            self.history.test_losses[server_round] = dict(sorted(tests.items()))
        mean = self.history.mean_eval_loss(server_round)
        log.info("round %d: mean eval loss %.4f over %d clients", server_round, mean, len(losses))
        return MetricRecord({keys.EVAL_LOSS: mean, "num-clients": len(losses)})

    # ----------------------------------------------------------------- helpers
    def _messages(
        self, adapters: Mapping[str, Mapping], message_type: str, server_round: int, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        present = set(grid.get_node_ids())
        messages = []
        for client_id, adapter in adapters.items():
            node = self.directory.node_of.get(client_id)
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


def run_strategy(
    grid: Grid,
    strategy: AdapterStrategy,
    *,
    timeout: float = 3600.0,
    evaluate_before_training: bool = True,
    required: Collection[str] = (),
) -> Result:
    """Wait for the nodes, handshake, evaluate every client (round 0), run the rounds.

    ``required``: client ids that must have identified themselves before the first round.

    Returns Flower's :class:`~flwr.serverapp.strategy.Result`; what happened is in
    ``strategy.history`` and the trained state in ``strategy.server``.

    Raises
    ------
    ClientIdentityError
        If no node identified itself, or a ``required`` client did not.
    """
    strategy.directory.timeout = float(timeout)
    wait_for_nodes(grid, strategy.min_available_nodes, timeout)
    strategy.identify_new_nodes(grid)
    strategy.directory.require_clients(required)
    cfg = strategy.server.config
    log.info(
        "%s: method %s, %d rounds, Poisson sample rate %.2f, seed %d, %d clients",
        type(strategy).__name__,
        strategy.server.method,
        cfg.rounds,
        cfg.sample_rate,
        cfg.seed,
        len(strategy.directory),
    )
    if evaluate_before_training:
        messages = strategy.evaluation_messages(0, ConfigRecord(), grid)
        strategy.record_evaluation(0, grid.send_and_receive(messages, timeout=timeout))
    return strategy.start(grid, ArrayRecord(), strategy.num_rounds, timeout)


#: The documented name: with a ``HyperLoRAServer`` this *is* the HyperLoRA strategy; the
#: same class with a ``FedAvgLoRAServer`` or ``LocalOnlyServer`` runs the baselines.
HyperLoRAStrategy = AdapterStrategy
