import pytest

import hypernet
from hypernet import ConfigError, HyperLoRAConfig, LocalTrainConfig, TrainerConfig
from hypernet import config as config_module

# (config class, field, bad value): every error names the class, the field and the value.
BAD_FIELDS = [
    (HyperLoRAConfig, "client_dim", 0),
    (HyperLoRAConfig, "hidden_dim", 2.5),
    (HyperLoRAConfig, "trunk_depth", True),
    (HyperLoRAConfig, "chunk_size", -1),
    (HyperLoRAConfig, "chunk_dim", 0),
    (HyperLoRAConfig, "client_init_std", -0.1),
    (HyperLoRAConfig, "head_init_std", "small"),
    (HyperLoRAConfig, "seed", "zero"),
    (TrainerConfig, "lr", 0),
    (TrainerConfig, "embedding_lr", -1.0),
    (TrainerConfig, "optimizer", "rmsprop"),
    (TrainerConfig, "momentum", -0.5),
    (TrainerConfig, "base_lr", 0.0),
    (TrainerConfig, "grad_clip", 0),
    (TrainerConfig, "batch_size", 0),
    (TrainerConfig, "clients_per_step", 2.5),
    (TrainerConfig, "seed", 1.5),
    (LocalTrainConfig, "steps", -1),
    (LocalTrainConfig, "lr", "fast"),
    (LocalTrainConfig, "batch_size", 0),
    (LocalTrainConfig, "optimizer", "adamw"),
    (LocalTrainConfig, "seed", None),
]


@pytest.mark.parametrize(
    ("cls", "name", "value"), BAD_FIELDS, ids=[f"{c.__name__}.{n}={v!r}" for c, n, v in BAD_FIELDS]
)
def test_a_bad_field_raises_config_error_naming_field_and_value(cls, name, value):
    with pytest.raises(ConfigError) as info:
        cls(**{name: value})
    message = str(info.value)
    assert f"{cls.__name__}.{name}" in message
    assert repr(value) in message


def test_defaults_and_edge_values_are_valid():
    for cls in (HyperLoRAConfig, TrainerConfig, LocalTrainConfig):
        cfg = cls()
        assert cls(**cfg.to_dict()) == cfg
    TrainerConfig(base_lr=1, momentum=0.0, grad_clip=None, embedding_lr=None)  # an int lr is a number
    LocalTrainConfig(steps=0)
    HyperLoRAConfig(chunk_size=None, client_init_std=0.0)


def test_every_config_lives_in_hypernet_config():
    for name in ("HyperLoRAConfig", "TrainerConfig", "LocalTrainConfig"):
        assert getattr(hypernet, name) is getattr(config_module, name)
        assert getattr(hypernet, name).__module__ == "hypernet.config"


def test_hyperlora_config_from_dict_rejects_unknown_fields():
    assert HyperLoRAConfig.from_dict({"seed": 3}) == HyperLoRAConfig(seed=3)
    with pytest.raises(ConfigError, match="unknown HyperLoRAConfig fields"):
        HyperLoRAConfig.from_dict({"width": 3})
