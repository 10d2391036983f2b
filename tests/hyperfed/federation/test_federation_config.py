import pytest

from hyperfed.federation import FederationConfig
from hypernet.errors import ConfigError


def test_run_config_round_trip_uses_kebab_case():
    config = FederationConfig(method="fedavg", rounds=3, sample_rate=0.5, embedding_lr=0.01)
    run_config = config.to_run_config()
    assert run_config["sample-rate"] == 0.5 and "sample_rate" not in run_config
    assert FederationConfig.from_run_config({**run_config, "unrelated-key": 1}) == config


@pytest.mark.parametrize("field,value", [("method", "x"), ("rounds", 0), ("sample_rate", 1.5), ("local_lr", 0.0), ("server_optimizer", "rmsprop")])
def test_invalid_fields_name_themselves(field, value):
    with pytest.raises(ConfigError, match=field):
        FederationConfig(**{field: value})
