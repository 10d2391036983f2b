"""Every name that travels between the ServerApp and the ClientApp, defined once.

Records in a message's :class:`~flwr.app.RecordDict`:

==============  ==============  ==========================================================
key             record          content
==============  ==============  ==========================================================
``arrays``      ArrayRecord     an adapter, peft state-dict key names (``…lora_A.weight``)
``config``      ConfigRecord    ``server-round``, ``client-id`` (server → client)
``metrics``     MetricRecord    ``num-examples``, ``train-loss`` / ``eval-loss``
``identity``    ConfigRecord    ``client-id`` (the handshake reply)
==============  ==============  ==========================================================

``arrays`` and ``config`` are also Flower's FedAvg defaults, so Flower's own tooling reads
our messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ARRAYS",
    "CONFIG",
    "METRICS",
    "IDENTITY",
    "SERVER_ROUND",
    "CLIENT_ID",
    "NUM_EXAMPLES",
    "TRAIN_LOSS",
    "EVAL_LOSS",
    "TEST_LOSS",
    "FINETUNE_STEPS",
    "PARTITION_ID",
    "NUM_PARTITIONS",
    "REPLAY_WITHOUT",
    "REPLAY_FROM",
    "REPLAY_DEFAULTS",
    "split_replay_keys",
]

# RecordDict keys
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
IDENTITY = "identity"

# ConfigRecord keys
SERVER_ROUND = "server-round"
CLIENT_ID = "client-id"  # also the SuperNode node-config key in a deployment

# MetricRecord keys
NUM_EXAMPLES = "num-examples"  # Flower's FedAvg weights by this key too
TRAIN_LOSS = "train-loss"
EVAL_LOSS = "eval-loss"  # on the client's validation blocks
TEST_LOSS = "test-loss"  # on its test blocks (reported only), where it has them
FINETUNE_STEPS = "finetune-steps"  # local steps chosen on validation before both (fedavg_ft)

# node-config keys that Flower's Simulation Engine sets on every virtual SuperNode
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"

# run-config keys of an exact forget's replay run (``hyperfed.flower.replay``); not part of
# the run's own config (``RunConfig``): the ServerApp takes them off before reading it
REPLAY_WITHOUT = "replay-without"  # the client being forgotten
REPLAY_FROM = "replay-from"  # its first round: the replay resumes from the checkpoint before it
#: Their values in the app's ``pyproject.toml`` (Flower only takes run-config keys the app
#: lists): no replay.
REPLAY_DEFAULTS: dict[str, str | int] = {REPLAY_WITHOUT: "", REPLAY_FROM: 0}


def split_replay_keys(run_config: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, int] | None]:
    """``run_config`` without the replay keys, and ``(client id, first round)`` where they ask
    for a replay (a client id and a round >= 1; else :class:`ValueError`; the defaults: none)."""
    rest = {k: v for k, v in run_config.items() if k not in REPLAY_DEFAULTS}
    client, first = run_config.get(REPLAY_WITHOUT, ""), run_config.get(REPLAY_FROM, 0)
    if client == "" and first == 0:
        return rest, None
    if not (
        isinstance(client, str) and client and isinstance(first, int) and not isinstance(first, bool) and first >= 1
    ):
        raise ValueError(
            f"a replay run needs {REPLAY_WITHOUT} (a client id) and {REPLAY_FROM} (a round >= 1), "
            f"got {client!r}, {first!r}"
        )
    return rest, (client, first)
