"""Federated training: sampling, the three methods' server logic, client logic, the loop.

The Flower apps in :mod:`hyperfed.flower` are thin layers over these functions.
"""

from hyperfed.federation.client_side import Evaluation, evaluate_client, evaluate_splits, local_round
from hyperfed.federation.config import FederationConfig
from hyperfed.federation.loop import evaluate_all, evaluate_all_splits, run_rounds
from hyperfed.federation.methods import METHODS, Method, make_server, method_label
from hyperfed.federation.sampling import participates, poisson_sample
from hyperfed.federation.servers import (
    AdapterServer,
    FedAvgLoRAServer,
    HyperLoRAServer,
    LocalOnlyServer,
    Reply,
    RoundOutcome,
    fedavg,
    screen_replies,
    screen_reply,
)

__all__ = [
    "FederationConfig",
    "METHODS",
    "Method",
    "method_label",
    "poisson_sample",
    "participates",
    "AdapterServer",
    "HyperLoRAServer",
    "FedAvgLoRAServer",
    "LocalOnlyServer",
    "Reply",
    "RoundOutcome",
    "fedavg",
    "screen_replies",
    "screen_reply",
    "make_server",
    "local_round",
    "evaluate_client",
    "evaluate_splits",
    "Evaluation",
    "evaluate_all_splits",
    "run_rounds",
    "evaluate_all",
]
