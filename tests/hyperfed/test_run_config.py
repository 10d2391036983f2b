from dataclasses import replace

import pytest
import tomllib

from hyperfed.config import RunConfig
from hyperfed.data.corpus import CorpusConfig
from hyperfed.flower import APP_DIR, keys
from hypernet.errors import ConfigError


def test_run_config_round_trip():
    config = RunConfig(corpus=CorpusConfig(domains=("code", "docs"), train_kib=2), run_dir="/tmp/x", min_nodes=3)
    run_config = config.to_run_config()
    assert run_config["corpus-domains"] == "code,docs" and run_config["min-nodes"] == 3
    assert RunConfig.from_run_config(run_config) == config


def test_partial_run_config_takes_defaults():
    config = RunConfig.from_run_config({"rounds": 3, "base-model-steps": 7})
    assert config.federation.rounds == 3 and config.base_model.steps == 7 and config.corpus == CorpusConfig()


def test_flower_app_pyproject_lists_every_key_with_its_default():
    pyproject = tomllib.loads((APP_DIR / "pyproject.toml").read_text())
    listed, expected = pyproject["tool"]["flwr"]["app"]["config"], RunConfig().to_run_config() | keys.REPLAY_DEFAULTS
    # `flwr run --run-config` rejects keys the app does not list; stale defaults mislead.
    stale = {k: expected.get(k) for k in set(listed) | set(expected) if listed.get(k) != expected.get(k)}
    assert not stale, f"update [tool.flwr.app.config] in {APP_DIR / 'pyproject.toml'}: {stale}"
    components = pyproject["tool"]["flwr"]["app"]["components"]
    assert components == {"serverapp": "hyperfed.flower.server_app:app", "clientapp": "hyperfed.flower.client_app:app"}
    assert "federations" not in pyproject["tool"]["flwr"]  # legacy in 1.42: flwr run would rewrite the file
    assert sorted(p.name for p in APP_DIR.iterdir()) == ["pyproject.toml"]  # the FAB stays tiny


@pytest.mark.parametrize(
    "run_config,match",
    [
        ({"corpus-train-kb": 2}, "unknown run-config keys"),
        ({"rounds": 0}, "rounds"),
        ({"min-nodes": 0}, "min_nodes"),
        ({"local-lr": 0.0}, "lr"),
    ],
)
def test_bad_run_configs_are_rejected_with_the_key_named(run_config, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_run_config(run_config)


def test_a_partial_section_keeps_its_own_defaults_not_its_classes():
    # federation.server defaults to the federated settings (base-lr 1.0), not TrainerConfig()'s
    from hyperfed.federation import FederationConfig

    expected = FederationConfig().server
    assert RunConfig.from_run_config({"server-lr": 0.01}).federation.server == replace(expected, lr=0.01)
    assert RunConfig.from_dict({"federation": {"server": {"lr": 0.01}}}).federation.server == replace(expected, lr=0.01)


def test_run_json_round_trip_and_unknown_keys_named():
    config = RunConfig(corpus=CorpusConfig(domains=("code",)), methods=("hyperlora", "local"), run_dir="/tmp/r")
    assert RunConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="loacl"):
        RunConfig.from_dict({"federation": {"loacl": {}}})
    with pytest.raises(ConfigError, match="must be a table"):
        RunConfig.from_dict({"federation": 3})
