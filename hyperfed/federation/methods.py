"""The method registry: every federated method by name, with its label and its server.

A new method is one module with an :class:`~hyperfed.federation.servers.AdapterServer`
subclass and a ``make(peft_model, config)`` factory, plus one line in :data:`METHODS`. The
experiment, the Flower ServerApp and the CLI take their choices from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hypernet.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from hyperfed.federation.config import FederationConfig
    from hyperfed.federation.servers import AdapterServer

__all__ = ["Method", "METHODS", "method_label", "make_server"]


@dataclass(frozen=True)
class Method:
    """A registered method: display label, one-line summary and server factory path
    (``"module:function"``, imported on first use so the registry stays light).

    ``finetune_steps``: a grid of local fine-tuning steps each client runs on the adapter it
    receives *at evaluation*, keeping the grid point with the lowest validation loss
    (:func:`hyperfed.federation.client_side.evaluate_splits`); empty: evaluated as received.
    """

    label: str
    summary: str
    factory: str
    finetune_steps: tuple[int, ...] = ()

    def make(self, peft_model: nn.Module, config: FederationConfig, **kwargs: object) -> AdapterServer:
        import importlib

        module, name = self.factory.split(":")
        make: Callable[..., AdapterServer] = getattr(importlib.import_module(module), name)
        return make(peft_model, config, **kwargs)


#: name -> method. Order is the order of result tables.
METHODS: dict[str, Method] = {
    "hyperlora": Method(
        "HyperLoRA",
        "a hypernetwork generates each client's adapter (pFedHN update)",
        "hyperfed.federation.servers:make_hyperlora_server",
    ),
    "fedavg": Method(
        "FedAvg-LoRA", "one shared adapter, averaged over the replies", "hyperfed.federation.servers:make_fedavg_server"
    ),
    "local": Method(
        "local-only",
        "each client keeps its own adapter; nothing is shared",
        "hyperfed.federation.servers:make_local_server",
    ),
    "fedavg_ft": Method(
        "FedAvg-LoRA+FT",
        "FedAvg-LoRA, then each client fine-tunes the global adapter (steps chosen on val)",
        "hyperfed.federation.fedavg_ft:make_fedavg_ft_server",
        finetune_steps=(0, 10, 20),
    ),
    "fedsa": Method(
        "FedSA-LoRA",
        "LoRA A matrices shared (averaged), B matrices kept per client (Guo et al., ICLR 2025)",
        "hyperfed.federation.fedsa:make_fedsa_server",
    ),
}


def method_label(name: str) -> str:
    return METHODS[name].label


def make_server(method: str, peft_model: nn.Module, config: FederationConfig, **kwargs: object) -> AdapterServer:
    """The server of ``method``; all start from the same peft LoRA initialisation.

    ``kwargs`` go to the method's factory (HyperLoRA: ``hypernet=`` an existing generator).
    """
    entry = METHODS.get(method)
    if entry is None:
        raise ConfigError(f"unknown method {method!r}; choose from {list(METHODS)}")
    return entry.make(peft_model, config, **kwargs)
