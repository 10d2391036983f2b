"""FedSA-LoRA: share the LoRA ``A`` matrices, keep the ``B`` matrices personal.

Guo et al., "Selective Aggregation for Low-Rank Adaptation in Federated Learning" (ICLR
2025) observe that in federated LoRA the ``A`` matrices learn what is general and the ``B``
matrices what is client-specific; FedSA-LoRA averages only ``A`` (FedAvg, weighted by
examples) and leaves each client its own ``B`` — a FedRep-style split of the adapter. The
server plays the clients' disk for ``B`` (as :class:`~hyperfed.federation.LocalOnlyServer`
does for whole adapters), so it runs over the unchanged client and Flower strategy.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from hyperfed.federation.config import FederationConfig
from hyperfed.federation.servers import Adapter, AdapterServer, Reply, fedavg
from hypernet import TargetSpec, discover_targets
from hypernet.client_training import get_adapter

__all__ = ["FedSALoRAServer", "make_fedsa_server", "is_shared_key"]


def is_shared_key(key: str) -> bool:
    """Whether an adapter key is shared (a LoRA ``A`` matrix) rather than personal (``B``)."""
    return ".lora_A." in key


class FedSALoRAServer(AdapterServer):
    """Averaged ``A`` matrices for all, one ``B`` per client (initially peft's zero ``B``)."""

    method = "fedsa"

    def __init__(self, initial: Mapping[str, torch.Tensor], spec: TargetSpec, config: FederationConfig) -> None:
        super().__init__(spec, config)
        self.shared: Adapter = {k: v.detach().clone() for k, v in initial.items() if is_shared_key(k)}
        self.initial_personal: Adapter = {k: v.detach().clone() for k, v in initial.items() if not is_shared_key(k)}
        self.personal: dict[str, Adapter] = {}

    def adapter_for(self, client_id: str) -> Adapter:
        personal = self.personal.get(client_id, self.initial_personal)
        return {k: v.clone() for k, v in (self.shared | personal).items()}

    def _learn(self, accepted: Mapping[str, Reply]) -> dict[str, float]:
        ids = sorted(accepted)
        shared = [{k: v for k, v in accepted[c].adapter.items() if is_shared_key(k)} for c in ids]
        self.shared = fedavg(shared, [accepted[c].num_examples for c in ids])
        for cid in ids:
            self.personal[cid] = {
                k: v.detach().clone() for k, v in accepted[cid].adapter.items() if not is_shared_key(k)
            }
        return {}


def make_fedsa_server(peft_model: nn.Module, config: FederationConfig) -> FedSALoRAServer:
    return FedSALoRAServer(get_adapter(peft_model), discover_targets(peft_model), config)
