"""Client embeddings keyed by user string ids.

Each client owns a *separate* ``nn.Parameter``. That makes three things simple and exact:
adding or removing a client never touches another client's tensor; an optimizer keeps a
separate state entry per client, which can be deleted completely; and a client that was not
in a batch gets no gradient, so its embedding does not move.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from hypernet.errors import DuplicateClientError, UnknownClientError

__all__ = ["ClientEmbeddings", "client_seed", "embedding_parameter_name"]


def client_seed(seed: int, client_id: str) -> int:
    """A 63-bit seed derived from ``(seed, client_id)``; stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}\x00{client_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def embedding_parameter_name(client_id: str) -> str:
    """Name of ``client_id``'s parameter inside :attr:`ClientEmbeddings.vectors`.

    ``ParameterDict`` names cannot contain ``'.'`` and user ids can, so the name is a fixed
    hash of the id: the same in every run, on every machine, with or without a model.
    """
    return "c" + hashlib.sha256(client_id.encode()).hexdigest()[:24]


class ClientEmbeddings(nn.Module):
    """An ordered set of per-client embedding vectors."""

    vectors: nn.ParameterDict
    _probe: torch.Tensor

    def __init__(self, dim: int, init_std: float, seed: int) -> None:
        super().__init__()
        self.dim = dim
        self.init_std = init_std
        self.seed = seed
        self.vectors = nn.ParameterDict()
        self._names: dict[str, str] = {}  # client id -> parameter name, insertion ordered
        self.register_buffer("_probe", torch.zeros(()), persistent=False)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._names

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    @property
    def ids(self) -> list[str]:
        return list(self._names)

    def add(self, client_id: str, vector: torch.Tensor | None = None) -> nn.Parameter:
        """Register ``client_id`` with ``vector`` or a deterministic random initialisation."""
        if not isinstance(client_id, str) or not client_id:
            raise TypeError(f"client ids are non-empty strings, got {client_id!r}")
        if client_id in self._names:
            raise DuplicateClientError(f"client {client_id!r} is already registered")
        ref = self._reference_tensor()
        if vector is None:
            gen = torch.Generator().manual_seed(client_seed(self.seed, client_id))
            vector = torch.randn(self.dim, generator=gen) * self.init_std
        if tuple(vector.shape) != (self.dim,):
            raise ValueError(f"embedding for {client_id!r} must have shape ({self.dim},), got {tuple(vector.shape)}")
        param = nn.Parameter(vector.detach().to(device=ref.device, dtype=ref.dtype).clone())
        name = embedding_parameter_name(client_id)
        self.vectors[name] = param
        self._names[client_id] = name
        return param

    def remove(self, client_id: str) -> nn.Parameter:
        """Unregister ``client_id`` and return its (now detached from the module) parameter."""
        name = self._name(client_id)
        param: nn.Parameter = self.vectors[name]
        del self.vectors[name]
        del self._names[client_id]
        return param

    def parameter(self, client_id: str) -> nn.Parameter:
        """The embedding of ``client_id`` (:class:`UnknownClientError` if not registered)."""
        param: nn.Parameter = self.vectors[self._name(client_id)]
        return param

    def stack(self, client_ids: Sequence[str]) -> torch.Tensor:
        """Embeddings of ``client_ids`` as one tensor ``(b, client_dim)`` that keeps autograd."""
        return torch.stack([self.parameter(cid) for cid in client_ids])

    def _name(self, client_id: str) -> str:
        try:
            return self._names[client_id]
        except KeyError:
            raise UnknownClientError(
                f"unknown client {client_id!r}; registered: {self.ids[:5]}" + ("..." if len(self) > 5 else "")
            ) from None

    def _reference_tensor(self) -> torch.Tensor:
        # Follows the module's device and dtype even while it holds no client.
        return self._probe
