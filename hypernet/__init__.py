"""hypernet: a hypernetwork that generates per-client LoRA adapters for Hugging Face causal LMs.

Pure PyTorch + peft; knows nothing of Flower or ledgers.
"""

from hypernet.config import HyperLoRAConfig
from hypernet.data import ClientData, to_blocks
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
from hypernet.functional import causal_lm_loss, functional_forward
from hypernet.hyperlora import HyperLoRA
from hypernet.local import LocalTrainConfig, evaluate_loss, train_local_adapter
from hypernet.pfedhn import pfedhn_backward, validate_adapter
from hypernet.trainer import HypernetTrainer, TrainerConfig
from hypernet.io import adapter_hash, export_adapter, load_hypernet, save_hypernet
from hypernet.targets import LoraTarget, TargetSpec, discover_targets

__all__ = [
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
