import pytest

from hyperfed.federation import FederationConfig
from hypernet import LocalTrainConfig, TrainerConfig
from hypernet.errors import ConfigError


def test_client_and_server_parts_are_hypernets_own_configs_seeded_by_the_federation():
    config = FederationConfig(seed=7, local=LocalTrainConfig(steps=3, seed=99), server=TrainerConfig(lr=0.01, seed=5))
    assert isinstance(config.local, LocalTrainConfig) and isinstance(config.server, TrainerConfig)
    assert config.local.seed == 7 and config.server.seed == 7  # one seed for the whole tree
    round_1, round_2 = config.local_config(1, "alice"), config.local_config(2, "alice")
    assert round_1.steps == 3 and round_1.seed != round_2.seed != config.local_config(1, "bob").seed


def test_defaults_are_the_measured_federated_settings():
    server = FederationConfig().server
    assert (server.lr, server.optimizer, server.momentum, server.base_lr) == (3e-3, "adam", 0.0, 1.0)


@pytest.mark.parametrize(
    "field,value", [("method", "x"), ("rounds", 0), ("sample_rate", 1.5), ("max_update_norm", 0.0), ("lora_rank", 0)]
)
def test_invalid_fields_name_themselves(field, value):
    with pytest.raises(ConfigError, match=field):
        FederationConfig(**{field: value})


@pytest.mark.parametrize(
    "part,kwargs,field", [(LocalTrainConfig, {"lr": 0.0}, "lr"), (TrainerConfig, {"optimizer": "rmsprop"}, "optimizer")]
)
def test_invalid_parts_name_their_field(part, kwargs, field):
    with pytest.raises(ConfigError, match=field):
        part(**kwargs)
