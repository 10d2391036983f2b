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
