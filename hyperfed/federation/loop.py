"""The federated loop in plain Python (no Flower runtime).

Same sampling, same client code and same server code as the Flower apps; used by
benchmarks, by unlearning's exact replay, and by tests that check the Flower path
produces the same result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from torch import nn

from hyperfed.federation.client_side import Evaluation, evaluate_client, evaluate_splits, local_round
from hyperfed.federation.config import FederationConfig
from hyperfed.federation.sampling import poisson_sample
from hyperfed.federation.servers import AdapterServer, RoundOutcome
from hypernet import ClientData

__all__ = ["run_rounds", "evaluate_all", "evaluate_all_splits"]

log = logging.getLogger(__name__)


def evaluate_all(server: AdapterServer, peft_model: nn.Module, clients: Mapping[str, ClientData]) -> dict[str, float]:
    """Each client's validation loss with the adapter the server gives it now."""
    server.register(list(clients))
    return {cid: evaluate_client(peft_model, server.adapter_for(cid), data) for cid, data in clients.items()}


def evaluate_all_splits(
    server: AdapterServer,
    peft_model: nn.Module,
    clients: Mapping[str, ClientData],
    config: FederationConfig | None = None,
    round_: int = 0,
) -> dict[str, Evaluation]:
    """Each client's validation and test loss with the adapter the server gives it now
    (fine-tuned first where ``config.method`` fine-tunes at evaluation)."""
    server.register(list(clients))
    return {
        cid: evaluate_splits(peft_model, server.adapter_for(cid), data, config, round_, cid)
        for cid, data in clients.items()
    }


def run_rounds(
    server: AdapterServer,
    peft_model: nn.Module,
    clients: Mapping[str, ClientData],
    config: FederationConfig,
    first_round: int = 1,
    last_round: int | None = None,
    callback: Callable[[RoundOutcome], None] | None = None,
) -> list[RoundOutcome]:
    """Run rounds ``first_round..last_round`` (default ``config.rounds``); return their outcomes."""
    ids = sorted(clients)  # the Flower strategy samples sorted ids too: both paths match bit for bit
    server.register(ids)
    outcomes = []
    for round_ in range(first_round, (last_round or config.rounds) + 1):
        sampled = poisson_sample(config.seed, round_, ids, config.sample_rate)
        sent = server.configure_round(round_, sampled)
        replies = {cid: local_round(peft_model, sent[cid], clients[cid], config, round_, cid) for cid in sampled}
        outcome = server.aggregate_round(round_, replies)
        norms = sorted(outcome.update_norms.values())  # a dp clip C should sit near their median
        median = f", median update norm {norms[len(norms) // 2]:.3g}" if norms else ""
        log.info("round %d: %d sampled, train loss %.4f%s", round_, len(sampled), outcome.train_loss, median)
        outcomes.append(outcome)
        if callback:
            callback(outcome)
    return outcomes
