"""hypernet: a hypernetwork that generates per-client LoRA adapters for Hugging Face causal LMs.

Pure PyTorch + peft; knows nothing of Flower or ledgers.

Importing ``hypernet`` is light: the error classes load at once, every other name on first
use (PEP 562), so an error class or ``import hypernet`` never pays for torch or peft.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypernet.errors import (
    CheckpointMismatchError,
    ConfigError,
    CorruptFileError,
    DuplicateClientError,
    HyperFedError,
    MalformedUpdateError,
    NoLoraTargetsError,
    UnknownClientError,
)
from hypernet.lazy import lazy_attributes

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time see __getattr__
    from hypernet.client_training import evaluate_loss, train_local_adapter
    from hypernet.config import HyperLoRAConfig, LocalTrainConfig, TrainerConfig
    from hypernet.data import ClientData, to_blocks
    from hypernet.functional import causal_lm_loss, functional_forward
    from hypernet.generators import (
        GENERATORS,
        Generator,
        embedding_tensor_names,
        generator_class,
    )
    from hypernet.hyperlora import HyperLoRA
    from hypernet.io import adapter_hash, export_adapter, load_hypernet, save_hypernet
    from hypernet.pfedhn import pfedhn_backward, validate_adapter
    from hypernet.targets import LoraTarget, TargetSpec, discover_targets
    from hypernet.trainer import HypernetTrainer

__all__ = [
    "Generator",
    "GENERATORS",
    "generator_class",
    "embedding_tensor_names",
    "HyperLoRA",
    "HypernetTrainer",
    "TrainerConfig",
    "ClientData",
    "to_blocks",
    "LocalTrainConfig",
    "train_local_adapter",
    "evaluate_loss",
    "pfedhn_backward",
    "validate_adapter",
    "HyperLoRAConfig",
    "LoraTarget",
    "TargetSpec",
    "discover_targets",
    "functional_forward",
    "causal_lm_loss",
    "adapter_hash",
    "export_adapter",
    "save_hypernet",
    "load_hypernet",
    "HyperFedError",
    "ConfigError",
    "UnknownClientError",
    "DuplicateClientError",
    "NoLoraTargetsError",
    "CheckpointMismatchError",
    "CorruptFileError",
    "MalformedUpdateError",
]

_LAZY: dict[str, str] = {
    "HyperLoRAConfig": "hypernet.config",
    "LocalTrainConfig": "hypernet.config",
    "TrainerConfig": "hypernet.config",
    "ClientData": "hypernet.data",
    "to_blocks": "hypernet.data",
    "causal_lm_loss": "hypernet.functional",
    "functional_forward": "hypernet.functional",
    "GENERATORS": "hypernet.generators",
    "Generator": "hypernet.generators",
    "embedding_tensor_names": "hypernet.generators",
    "generator_class": "hypernet.generators",
    "HyperLoRA": "hypernet.hyperlora",
    "evaluate_loss": "hypernet.client_training",
    "train_local_adapter": "hypernet.client_training",
    "pfedhn_backward": "hypernet.pfedhn",
    "validate_adapter": "hypernet.pfedhn",
    "HypernetTrainer": "hypernet.trainer",
    "adapter_hash": "hypernet.io",
    "export_adapter": "hypernet.io",
    "load_hypernet": "hypernet.io",
    "save_hypernet": "hypernet.io",
    "LoraTarget": "hypernet.targets",
    "TargetSpec": "hypernet.targets",
    "discover_targets": "hypernet.targets",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
