"""HyperLoRA: a hypernetwork that maps a client embedding to that client's LoRA adapter.

Axis legend (einops names used below)::

    b  clients in the batch          l  targets (layers) of one module type
    n  chunks per target             c  numbers produced per head call (chunk size)
    f  trunk input features          h  trunk hidden features
    d  adapter numbers per target    r  LoRA rank   i  in_features   o  out_features

Per target the trunk input is ``client ⊕ layer-depth ⊕ module-type (⊕ chunk)``
embeddings; a shared trunk MLP turns it into features; one linear head per module type
emits the flattened ``A (r×i)`` and ``B (o×r)`` of that target. One matmul per module type
serves all clients and all layers of the batch.

Initialisation (bias-HyperInit, as in Text-to-LoRA): each target has a learned *base*
adapter initialised exactly like peft initialises LoRA (A Kaiming-uniform, B = 0), and the
head's B outputs start at exactly zero, so every generated adapter starts at ΔW = B·A = 0
and the model's logits equal the base model's before training.

Client-owned residuals (``HyperLoRAConfig.client_residual``): each client may also own a
flat vector, zero at registration, added to its generated adapter (A and B of every target,
in the spec's order). Like the embedding it is client state, not a shared weight: it is
listed by :meth:`HyperLoRA.embedding_tensor_names`, left out of :meth:`shared_parameters`,
and removed by :meth:`HyperLoRA.remove_client`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, ClassVar

import torch
from einops import rearrange
from torch import nn

from hypernet.config import HyperLoRAConfig
from hypernet.embeddings import ClientEmbeddings, embedding_parameter_name
from hypernet.targets import LoraTarget, TargetSpec, discover_targets

__all__ = ["HyperLoRA", "lora_config_dict"]

Adapter = dict[str, torch.Tensor]


class _TargetGroup(nn.Module):
    """Head, base adapter and (optional) chunk embeddings of one module type."""

    layer_index: torch.Tensor  # (l,) a non-persistent buffer
    head: nn.Linear
    base: nn.Parameter  # (l, d)
    chunk_embedding: nn.Parameter | None  # (n, chunk_dim)

    def __init__(self, targets: Sequence[LoraTarget], type_index: int, cfg: HyperLoRAConfig) -> None:
        super().__init__()
        first = targets[0]
        self.keys = [t.key for t in targets]
        self.rank, self.in_features, self.out_features = first.rank, first.in_features, first.out_features
        self.numel = first.numel  # d = r·i + o·r
        self.type_index = type_index
        self.chunk_size = cfg.chunk_size or self.numel
        self.num_chunks = math.ceil(self.numel / self.chunk_size)
        self.register_buffer("layer_index", torch.tensor([t.layer for t in targets]), persistent=False)
        self.head = nn.Linear(cfg.hidden_dim, self.chunk_size)
        self.base = nn.Parameter(torch.zeros(len(targets), self.numel))  # (l, d)
        self.chunk_embedding = nn.Parameter(torch.randn(self.num_chunks, cfg.chunk_dim)) if cfg.chunk_size else None
        self._hyper_init(cfg.head_init_std)

    @torch.no_grad()
    def _hyper_init(self, head_init_std: float) -> None:
        a_numel = self.rank * self.in_features
        # Base A exactly as peft's default LoRA init: kaiming_uniform(a=√5) → U(±1/√in).
        bound = 1.0 / math.sqrt(self.in_features)
        self.base[:, :a_numel].uniform_(-bound, bound)
        self.base[:, a_numel:].zero_()
        self.head.bias.zero_()
        self.head.weight.zero_()
        if self.chunk_embedding is None:
            # Unchunked: rows of the head map 1:1 to adapter numbers; only A rows move at init.
            self.head.weight[:a_numel].normal_(0.0, head_init_std)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(b, l, n, h)`` → A ``(b, l, r, i)`` and B ``(b, l, o, r)``."""
        flat = rearrange(self.head(features), "b l n c -> b l (n c)")[..., : self.numel]
        flat = flat + self.base  # (b, l, d)
        a_numel = self.rank * self.in_features
        a = rearrange(flat[..., :a_numel], "b l (r i) -> b l r i", r=self.rank)
        b = rearrange(flat[..., a_numel:], "b l (o r) -> b l o r", r=self.rank)
        return a, b


class HyperLoRA(nn.Module):
    """Generate per-client LoRA adapters in peft's state-dict format.

    Registered as architecture ``"hyperlora"`` in :data:`hypernet.generators.GENERATORS`;
    it implements the :class:`hypernet.generators.Generator` protocol.

    Parameters
    ----------
    spec:
        LoRA targets of the model, from :func:`hypernet.discover_targets`.
    config:
        Sizes and initialisation; see :class:`HyperLoRAConfig`.
    client_ids:
        Clients to register right away (each gets a deterministic embedding).

    Examples
    --------
    >>> hn = HyperLoRA(discover_targets(peft_model), client_ids=["alice", "bob"])  # doctest: +SKIP
    >>> adapter = hn.generate("alice")  # {'base_model...q_proj.lora_A.weight': (r, in), ...}
    >>> both = hn.generate_many(["alice", "bob"])  # {'alice': {...}, 'bob': {...}}
    """

    architecture: ClassVar[str] = "hyperlora"
    spec: TargetSpec
    config: HyperLoRAConfig
    lora_config: dict[str, Any] | None
    layer_embedding: nn.Embedding
    type_embedding: nn.Embedding
    trunk: nn.Sequential
    groups: nn.ModuleList  # of _TargetGroup, one per module type
    clients: ClientEmbeddings
    residuals: ClientEmbeddings | None  # per-client residual adapters (flat), with client_residual

    def __init__(
        self,
        spec: TargetSpec,
        config: HyperLoRAConfig | None = None,
        client_ids: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.spec = spec
        self.config = cfg = config or HyperLoRAConfig()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            groups = spec.groups
            self.layer_embedding = nn.Embedding(spec.num_layers, cfg.layer_dim)
            self.type_embedding = nn.Embedding(len(groups), cfg.type_dim)
            in_dim = cfg.client_dim + cfg.layer_dim + cfg.type_dim + (cfg.chunk_dim if cfg.chunk_size else 0)
            layers: list[nn.Module] = []
            for depth in range(cfg.trunk_depth):
                layers += [nn.Linear(in_dim if depth == 0 else cfg.hidden_dim, cfg.hidden_dim), nn.GELU()]
            self.trunk = nn.Sequential(*layers)
            self.groups = nn.ModuleList(_TargetGroup(members, idx, cfg) for idx, members in enumerate(groups.values()))
        self.group_names = list(groups)
        self.lora_config: dict[str, Any] | None = None  # peft LoraConfig as JSON, for export
        self.clients = ClientEmbeddings(cfg.client_dim, cfg.client_init_std, cfg.seed)
        self.residuals = ClientEmbeddings(spec.adapter_numel, 0.0, cfg.seed) if cfg.client_residual else None
        for cid in client_ids:
            self.add_client(cid)

    @classmethod
    def from_peft_model(
        cls,
        peft_model: nn.Module,
        config: HyperLoRAConfig | Mapping[str, Any] | None = None,
        client_ids: Sequence[str] = (),
        adapter_name: str = "default",
    ) -> HyperLoRA:
        """Build a generator for ``peft_model``'s LoRA targets and remember its LoRA config.

        ``config`` is a :class:`HyperLoRAConfig` or its :meth:`~HyperLoRAConfig.to_dict`
        form (missing fields take their defaults).
        """
        if config is not None and not isinstance(config, HyperLoRAConfig):
            config = HyperLoRAConfig.from_dict(dict(config))
        hypernet = cls(discover_targets(peft_model, adapter_name), config, client_ids)
        peft: Any = peft_model  # peft's PeftModel (untyped attributes)
        hypernet.lora_config = lora_config_dict(peft.peft_config[adapter_name])
        return hypernet

    @classmethod
    def from_config(cls, spec: TargetSpec, config: Mapping[str, Any]) -> HyperLoRA:
        """An untrained generator from a spec and :meth:`HyperLoRAConfig.to_dict` output."""
        return cls(spec, HyperLoRAConfig.from_dict(dict(config)))

    # ------------------------------------------------------------ tensor names
    @classmethod
    def embedding_tensor_names(cls, client_id: str) -> tuple[str, ...]:
        """State-dict names of ``client_id``'s tensors: its embedding first, then its
        residual adapter (present only in a generator built with ``client_residual``).

        A fixed function of the id alone, so a checkpoint's tensors can be named without
        building a model.
        """
        name = embedding_parameter_name(client_id)
        return (f"clients.vectors.{name}", f"residuals.vectors.{name}")

    @classmethod
    def shared_tensor_names(cls, spec: TargetSpec, config: Mapping[str, Any]) -> frozenset[str]:
        """State-dict names of every tensor except client embeddings, for this architecture."""
        return _shared_tensor_names(spec, HyperLoRAConfig.from_dict(dict(config)))

    # ------------------------------------------------------------------ clients
    @property
    def client_ids(self) -> list[str]:
        return self.clients.ids

    def has_client(self, client_id: str) -> bool:
        return client_id in self.clients

    def client_parameter(self, client_id: str) -> nn.Parameter:
        """The embedding parameter of ``client_id`` (:class:`UnknownClientError` if absent)."""
        return self.clients.parameter(client_id)

    def client_parameters(self) -> list[nn.Parameter]:
        """Every client's embedding parameter, in registration order."""
        return list(self.clients.parameters())

    def residual_parameter(self, client_id: str) -> nn.Parameter | None:
        """The residual adapter of ``client_id`` (``None`` without ``client_residual``)."""
        return self.residuals.parameter(client_id) if self.residuals is not None else None

    def residual_parameters(self) -> list[nn.Parameter]:
        """Every client's residual adapter, in registration order (empty without residuals)."""
        return list(self.residuals.parameters()) if self.residuals is not None else []

    def add_client(self, client_id: str, embedding: torch.Tensor | None = None) -> nn.Parameter:
        """Register a client (and its zero residual); other clients' parameters are untouched."""
        param = self.clients.add(client_id, embedding)
        if self.residuals is not None:
            self.residuals.add(client_id, torch.zeros(self.residuals.dim))
        return param

    def remove_client(self, client_id: str) -> torch.Tensor:
        """Unregister a client (embedding and residual) and return a detached copy of its embedding."""
        removed = self.clients.remove(client_id).detach().clone()
        if self.residuals is not None:
            self.residuals.remove(client_id)
        return removed

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every parameter except client-owned ones (φ in pFedHN's notation)."""
        client_params = {id(p) for p in self.clients.parameters()}
        client_params |= {id(p) for p in self.residual_parameters()}
        return [p for p in self.parameters() if id(p) not in client_params]

    def base_parameters(self) -> list[nn.Parameter]:
        """The per-target base adapters (what every client's adapter starts from)."""
        return [g.base for g in self._target_groups()]

    def num_shared_parameters(self) -> int:
        """Number of scalars in :meth:`shared_parameters`."""
        return sum(p.numel() for p in self.shared_parameters())

    def _target_groups(self) -> list[_TargetGroup]:
        return [g for g in self.groups if isinstance(g, _TargetGroup)]

    # ------------------------------------------------------------ generation
    def generate_batch(self, client_ids: Sequence[str]) -> Adapter:
        """Adapters of many clients at once: key → tensor with a leading client axis ``b``.

        Keeps autograd into the hypernetwork (wrap in ``torch.no_grad()`` for inference).
        """
        emb = self.clients.stack(client_ids)  # (b, client_dim)
        out: Adapter = {}
        per_group: list[tuple[_TargetGroup, torch.Tensor, torch.Tensor]] = []
        for group in self._target_groups():
            n_layers, n_chunks = len(group.keys), group.num_chunks
            parts = [
                _expand(emb[:, None, None, :], len(client_ids), n_layers, n_chunks),
                _expand(self.layer_embedding(group.layer_index)[None, :, None, :], len(client_ids), n_layers, n_chunks),
                _expand(
                    self.type_embedding.weight[group.type_index][None, None, None, :],
                    len(client_ids),
                    n_layers,
                    n_chunks,
                ),
            ]
            if group.chunk_embedding is not None:
                parts.append(_expand(group.chunk_embedding[None, None], len(client_ids), n_layers, n_chunks))
            features = self.trunk(torch.cat(parts, dim=-1))  # (b, l, n, h)
            a, b = group(features)
            per_group.append((group, a, b))
        index = {key: (g, j) for g, _, _ in per_group for j, key in enumerate(g.keys)}
        tensors = {id(g): (a, b) for g, a, b in per_group}
        residual = self.residuals.stack(client_ids) if self.residuals is not None else None  # (b, D)
        offset = 0
        for target in self.spec:  # emit in peft's order: A then B per target
            group, j = index[target.key]
            a, b = tensors[id(group)]
            out[target.a_key] = a[:, j]  # (b, r, i)
            out[target.b_key] = b[:, j]  # (b, o, r)
            if residual is not None:
                for key, shape in ((target.a_key, target.a_shape), (target.b_key, target.b_shape)):
                    size = shape[0] * shape[1]
                    out[key] = out[key] + residual[:, offset : offset + size].reshape(-1, *shape)
                    offset += size
        return out

    def generate(self, client_id: str) -> Adapter:
        """One client's adapter in peft's state-dict format (adapter name stripped).

        Raises
        ------
        TypeError
            If ``client_id`` is not a string (use :meth:`generate_many` for several clients).
        UnknownClientError
            If ``client_id`` is not registered.
        """
        if not isinstance(client_id, str):
            raise TypeError(
                f"generate() takes one client id (a str), got {type(client_id).__name__}; "
                "use generate_many(client_ids) for several clients"
            )
        return {k: v[0] for k, v in self.generate_batch([client_id]).items()}

    def generate_many(self, client_ids: Sequence[str]) -> dict[str, Adapter]:
        """Adapters of many clients with one batched generation: ``{client_id: adapter}``.

        An empty sequence gives ``{}``.
        """
        if isinstance(client_ids, str):
            raise TypeError("generate_many() takes a sequence of client ids; use generate(client_id) for one")
        ids = list(client_ids)
        if not ids:
            return {}
        batch = self.generate_batch(ids)
        return {cid: {k: v[n] for k, v in batch.items()} for n, cid in enumerate(ids)}


def lora_config_dict(peft_config: Any) -> dict[str, Any]:
    """A peft ``LoraConfig`` as plain JSON-able data (sets → sorted lists, enums → str)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in peft_config.to_dict().items()}


@functools.lru_cache(maxsize=8)
def _shared_tensor_names(spec: TargetSpec, config: HyperLoRAConfig) -> frozenset[str]:
    # Built on the meta device: names and shapes only, no memory and no random numbers.
    with torch.device("meta"):
        names = HyperLoRA(spec, config).state_dict().keys()
    return frozenset(names)


def _expand(t: torch.Tensor, b: int, layers: int, n: int) -> torch.Tensor:
    """Broadcast a ``(1|b, 1|l, 1|n, f)`` tensor to ``(b, l, n, f)`` without copying."""
    return t.expand(b, layers, n, t.shape[-1])
