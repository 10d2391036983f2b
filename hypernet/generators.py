"""What a generator of per-client adapters must offer, and the registry of generators.

Everything outside a generator's own module — :class:`~hypernet.HypernetTrainer`, the
pFedHN update, checkpoint I/O, the servers and the ledger fingerprints — uses only the
:class:`Generator` protocol below. A new generator is one module plus one line in
:data:`GENERATORS`; checkpoints carry the generator's :attr:`~Generator.architecture` tag
and :func:`hypernet.load_hypernet` dispatches on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from hypernet.errors import ConfigError
from hypernet.hyperlora import HyperLoRA
from hypernet.targets import TargetSpec

__all__ = [
    "Generator",
    "SupportsToDict",
    "GENERATORS",
    "DEFAULT_ARCHITECTURE",
    "generator_class",
    "embedding_tensor_names",
]

Adapter = dict[str, torch.Tensor]

DEFAULT_ARCHITECTURE = "hyperlora"


class SupportsToDict(Protocol):
    """A configuration that serialises to JSON-able data (and back, via ``from_config``)."""

    def to_dict(self) -> dict[str, Any]: ...


class Generator(Protocol):
    """A module that maps registered client ids to LoRA adapters in peft's format.

    Class-level members (usable without an instance, e.g. to read a checkpoint):
    :attr:`architecture`, :meth:`from_peft_model`, :meth:`from_config`,
    :meth:`embedding_tensor_names`, :meth:`shared_tensor_names`.
    """

    architecture: ClassVar[str]
    """Registry tag, stored in checkpoints (``"hyperlora"``)."""

    lora_config: dict[str, Any] | None
    """The peft ``LoraConfig`` as JSON (for export); ``None`` if unknown."""

    @classmethod
    def from_peft_model(
        cls,
        peft_model: nn.Module,
        config: Mapping[str, Any] | None = None,
        client_ids: Sequence[str] = (),
        adapter_name: str = "default",
    ) -> Generator:
        """A generator for ``peft_model``'s LoRA targets that remembers its LoRA config."""
        ...

    @classmethod
    def from_config(cls, spec: TargetSpec, config: Mapping[str, Any]) -> Generator:
        """An untrained generator for ``spec`` from ``config.to_dict()`` output."""
        ...

    @classmethod
    def embedding_tensor_names(cls, client_id: str) -> tuple[str, ...]:
        """State-dict names of the tensors that belong to ``client_id`` alone."""
        ...

    @classmethod
    def shared_tensor_names(cls, spec: TargetSpec, config: Mapping[str, Any]) -> frozenset[str]:
        """State-dict names of every tensor not owned by a client."""
        ...

    @property
    def spec(self) -> TargetSpec: ...

    @property
    def config(self) -> SupportsToDict: ...

    @property
    def client_ids(self) -> list[str]: ...

    def has_client(self, client_id: str) -> bool: ...

    def add_client(self, client_id: str, embedding: torch.Tensor | None = None) -> nn.Parameter: ...

    def remove_client(self, client_id: str) -> torch.Tensor: ...

    def client_parameter(self, client_id: str) -> nn.Parameter: ...

    def client_parameters(self) -> list[nn.Parameter]: ...

    def residual_parameter(self, client_id: str) -> nn.Parameter | None:
        """The client-owned residual adapter of ``client_id`` (``None``: the generator has none)."""
        ...

    def residual_parameters(self) -> list[nn.Parameter]: ...

    def shared_parameters(self) -> list[nn.Parameter]: ...

    def base_parameters(self) -> list[nn.Parameter]: ...

    def generate(self, client_id: str) -> Adapter: ...

    def generate_many(self, client_ids: Sequence[str]) -> dict[str, Adapter]: ...

    def generate_batch(self, client_ids: Sequence[str]) -> Adapter: ...

    # the parts of nn.Module the library uses
    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]: ...

    def state_dict(self, *, prefix: str = "", keep_vars: bool = False) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any: ...

    def to(self, device: str | torch.device) -> Generator: ...


GENERATORS: dict[str, type[Generator]] = {
    HyperLoRA.architecture: HyperLoRA,
}
"""Architecture tag → generator class. Add a generator here to make it loadable."""


def generator_class(architecture: str) -> type[Generator]:
    """The registered class for ``architecture``; :class:`ConfigError` names the known tags."""
    try:
        return GENERATORS[architecture]
    except KeyError:
        raise ConfigError(f"unknown generator architecture {architecture!r}; known: {sorted(GENERATORS)}") from None


def embedding_tensor_names(client_id: str, architecture: str = DEFAULT_ARCHITECTURE) -> tuple[str, ...]:
    """State-dict names of ``client_id``'s tensors in a generator of ``architecture``
    (the embedding first; every name a checkpoint holds for the client is among them).

    A function of the id alone (no model is built): ``embedding_tensor_names("alice")`` →
    ``("clients.vectors.c…",)`` for HyperLoRA.
    """
    return generator_class(architecture).embedding_tensor_names(client_id)
