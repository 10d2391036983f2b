"""Discover the LoRA targets of a peft-wrapped model once, as a shape-only spec.

The hypernetwork is written against this spec, never against a live model: shapes come
from peft's own ``lora_A`` / ``lora_B`` weights, so grouped-query attention (k/v narrower
than q), GPT-2's fused ``Conv1D`` ``c_attn`` and per-module rank patterns need no special
cases.

A *module type* is the module's path inside its transformer block (``self_attn.q_proj``,
``mlp.down_proj``, ``attn.c_proj``...), so GPT-2's ``attn.c_proj`` and ``mlp.c_proj``
are different types. Targets of one type share one generator head; if a type's shapes
differ between layers, the shape is appended to the group name so each head stays
rectangular.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from hypernet.errors import CheckpointMismatchError, ConfigError, NoLoraTargetsError

__all__ = ["LoraTarget", "TargetSpec", "discover_targets"]

_LAYER_INDEX = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class LoraTarget:
    """One LoRA-adapted linear map.

    Attributes
    ----------
    key:
        Module path as peft names it, e.g.
        ``base_model.model.model.layers.0.self_attn.q_proj``. The adapter's state-dict
        keys are ``f"{key}.lora_A.weight"`` (rank, in) and ``f"{key}.lora_B.weight"`` (out, rank).
    layer:
        Index of the transformer block (0 for modules outside the numbered blocks).
    module_type:
        Path of the module inside its block, e.g. ``self_attn.q_proj``.
    in_features, out_features, rank:
        Shapes read from peft's ``lora_A`` / ``lora_B`` weights.
    """

    key: str
    layer: int
    module_type: str
    in_features: int
    out_features: int
    rank: int

    @property
    def a_key(self) -> str:
        return f"{self.key}.lora_A.weight"

    @property
    def b_key(self) -> str:
        return f"{self.key}.lora_B.weight"

    @property
    def a_shape(self) -> tuple[int, int]:
        return (self.rank, self.in_features)

    @property
    def b_shape(self) -> tuple[int, int]:
        return (self.out_features, self.rank)

    @property
    def numel(self) -> int:
        """Parameters of one adapter for this target: r·in + out·r."""
        return self.rank * (self.in_features + self.out_features)


@dataclass(frozen=True)
class TargetSpec:
    """All LoRA targets of a model, ordered as peft orders them, grouped by head."""

    targets: tuple[LoraTarget, ...]

    def __post_init__(self) -> None:
        if not self.targets:
            raise NoLoraTargetsError("a TargetSpec needs at least one LoRA target")
        keys = [t.key for t in self.targets]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"duplicate LoRA target keys in spec: {keys}")

    def __len__(self) -> int:
        return len(self.targets)

    def __iter__(self) -> Iterator[LoraTarget]:
        return iter(self.targets)

    @property
    def num_layers(self) -> int:
        return max(t.layer for t in self.targets) + 1

    @property
    def groups(self) -> dict[str, tuple[LoraTarget, ...]]:
        """Targets sharing one generator head, keyed by group name, in first-seen order."""
        by_type: dict[str, list[LoraTarget]] = {}
        for t in self.targets:
            by_type.setdefault(t.module_type, []).append(t)
        groups: dict[str, tuple[LoraTarget, ...]] = {}
        for module_type, members in by_type.items():
            shapes = {(t.rank, t.in_features, t.out_features) for t in members}
            if len(shapes) == 1:
                groups[module_type] = tuple(members)
                continue
            for t in members:  # ragged type: one head per distinct shape
                name = f"{module_type}[r{t.rank}x{t.in_features}x{t.out_features}]"
                groups[name] = groups.get(name, ()) + (t,)
        return groups

    @property
    def adapter_numel(self) -> int:
        """Parameters of one client's full adapter."""
        return sum(t.numel for t in self.targets)

    def state_dict_shapes(self) -> dict[str, tuple[int, int]]:
        """Expected adapter keys and shapes, in peft's order."""
        shapes: dict[str, tuple[int, int]] = {}
        for t in self.targets:
            shapes[t.a_key] = t.a_shape
            shapes[t.b_key] = t.b_shape
        return shapes

    def to_json(self) -> str:
        return json.dumps([asdict(t) for t in self.targets])

    @classmethod
    def from_json(cls, text: str) -> TargetSpec:
        return cls(tuple(LoraTarget(**row) for row in json.loads(text)))

    def check_compatible(self, other: TargetSpec) -> None:
        """Raise :class:`CheckpointMismatchError` naming the first differing target."""
        if self == other:
            return
        mine = {t.key: t for t in self.targets}
        theirs = {t.key: t for t in other.targets}
        missing = sorted(set(mine) - set(theirs))
        extra = sorted(set(theirs) - set(mine))
        if missing or extra:
            raise CheckpointMismatchError(
                f"LoRA targets differ: missing in model {missing[:3]}, unexpected {extra[:3]}; "
                "use the base model and LoraConfig the hypernetwork was built for"
            )
        for key, t in mine.items():
            if t != theirs[key]:
                raise CheckpointMismatchError(
                    f"LoRA target {key} has shape A{t.a_shape}/B{t.b_shape} in the checkpoint "
                    f"but A{theirs[key].a_shape}/B{theirs[key].b_shape} in the model"
                )
        raise CheckpointMismatchError("LoRA target order differs between checkpoint and model")


def discover_targets(peft_model: nn.Module, adapter_name: str = "default") -> TargetSpec:
    """Read the LoRA targets of ``peft_model`` for one adapter.

    Parameters
    ----------
    peft_model:
        A model returned by ``peft.get_peft_model`` with a LoRA adapter.
    adapter_name:
        Which adapter's shapes to read.

    Raises
    ------
    NoLoraTargetsError
        If the model carries no LoRA layer for ``adapter_name``.
    ConfigError
        For LoRA variants the generator does not produce (DoRA, LoRA bias, embeddings).
    """
    from peft.tuners.lora import LoraLayer

    targets: list[LoraTarget] = []
    for name, module in peft_model.named_modules():
        if not isinstance(module, LoraLayer) or adapter_name not in module.lora_A:
            continue
        if adapter_name in getattr(module, "lora_embedding_A", {}):
            raise ConfigError(f"{name}: LoRA on embeddings is not supported; target linear layers")
        if getattr(module, "use_dora", {}).get(adapter_name, False):
            raise ConfigError(f"{name}: DoRA adapters are not supported (use_dora=False)")
        if getattr(module, "lora_bias", {}).get(adapter_name, False):
            raise ConfigError(f"{name}: lora_bias=True is not supported")
        layer_module: Any = module  # a peft LoraLayer (peft's attributes are not typed)
        a = layer_module.lora_A[adapter_name].weight
        b = layer_module.lora_B[adapter_name].weight
        match = _LAYER_INDEX.search(name)
        layer = int(match.group(1)) if match else 0
        module_type = name[match.end() :] if match else name.rsplit(".", 1)[-1]
        targets.append(
            LoraTarget(
                key=name,
                layer=layer,
                module_type=module_type,
                in_features=int(a.shape[1]),
                out_features=int(b.shape[0]),
                rank=int(a.shape[0]),
            )
        )
    if not targets:
        raise NoLoraTargetsError(
            f"no LoRA layers for adapter {adapter_name!r}: wrap the model with "
            "peft.get_peft_model(model, LoraConfig(target_modules=[...])) first"
        )
    return TargetSpec(tuple(targets))
