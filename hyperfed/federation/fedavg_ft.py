"""FedAvg-LoRA followed by local fine-tuning: the standard strong personalised baseline.

Training is FedAvg-LoRA exactly (one shared adapter, averaged over the replies). The
personalisation happens at evaluation: each client fine-tunes the global adapter it
receives on its own train blocks for each step count of the method's grid
(``METHODS["fedavg_ft"].finetune_steps``) and keeps the one with the lowest validation
loss (:func:`hyperfed.federation.client_side.evaluate_splits`). The server is FedAvg's.
"""

from __future__ import annotations

from torch import nn

from hyperfed.federation.config import FederationConfig
from hyperfed.federation.servers import FedAvgLoRAServer
from hypernet import discover_targets
from hypernet.client_training import get_adapter

__all__ = ["FedAvgFineTuneServer", "make_fedavg_ft_server"]


class FedAvgFineTuneServer(FedAvgLoRAServer):
    """FedAvg-LoRA's server under its own method name (clients fine-tune at evaluation)."""

    method = "fedavg_ft"


def make_fedavg_ft_server(peft_model: nn.Module, config: FederationConfig) -> FedAvgFineTuneServer:
    return FedAvgFineTuneServer(get_adapter(peft_model), discover_targets(peft_model), config)
