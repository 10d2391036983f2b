"""Everything a Flower run needs to know, read from the run config in one place.

A Flower run config is a flat mapping of kebab-case keys to ``bool | int | float | str``.
Ours has four groups:

==================  =====================================================================
keys                meaning
==================  =====================================================================
``method``, …       :class:`~hyperfed.federation.FederationConfig` (its own keys, unprefixed)
``corpus-…``        :class:`~hyperfed.data.corpus.CorpusConfig` (``corpus-domains`` is a
                    comma-separated list)
``base-model-…``    :class:`~hyperfed.base_model.BaseModelConfig` (the cached base model)
``run-dir``, …      this layer: ``run-dir``, ``min-nodes``, ``round-timeout``,
                    ``evaluate-every``
==================  =====================================================================

The Flower app's ``pyproject.toml`` lists every key with its default
(:meth:`AppConfig.to_run_config` of ``AppConfig()``); a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from hyperfed.base_model import BaseModelConfig
from hyperfed.data.corpus import CorpusConfig
from hyperfed.federation import FederationConfig
from hypernet.errors import ConfigError

__all__ = ["AppConfig", "RunConfigValue"]

RunConfigValue = bool | int | float | str

_CORPUS, _BASE = "corpus-", "base-model-"
# FederationConfig keys that have no default a TOML file can hold (None): accepted when given.
_OPTIONAL_FEDERATION_KEYS = frozenset({"embedding-lr"})


def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _dataclass_to_run_config(obj: Any, prefix: str) -> dict[str, RunConfigValue]:
    out: dict[str, RunConfigValue] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        out[prefix + _kebab(f.name)] = ",".join(value) if isinstance(value, tuple) else value
    return out


def _dataclass_from_run_config(cls: type, run_config: Mapping[str, Any], prefix: str) -> Any:
    values: dict[str, Any] = {}
    for f in fields(cls):
        key = prefix + _kebab(f.name)
        if key in run_config:
            value = run_config[key]
            if isinstance(f.default, tuple):  # tuples travel as comma-separated strings
                value = tuple(part.strip() for part in str(value).split(",") if part.strip())
            values[f.name] = value
    return cls(**values)


@dataclass(frozen=True)
class AppConfig:
    """Settings of one Flower run: the federation, the data, the base model, the run.

    Attributes
    ----------
    federation
        Method, rounds, sampling, local and server optimisation.
    corpus
        Which clients exist and how much data each has (every node builds the same corpus).
    base_model
        Recipe of the cached base model every node loads.
    run_dir
        Where the ServerApp writes its results (``""``: write nothing).
    min_nodes
        Nodes to wait for before the handshake (``grid.get_node_ids()`` starts empty).
    round_timeout
        Seconds to wait for the replies of one round (and of the handshake).
    evaluate_every
        Evaluate every client every this many rounds (and always before the first and
        after the last round); ``0``: only before the first and after the last.
    """

    federation: FederationConfig = field(default_factory=FederationConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    base_model: BaseModelConfig = field(default_factory=BaseModelConfig)
    run_dir: str = ""
    min_nodes: int = 2
    round_timeout: float = 3600.0
    evaluate_every: int = 1

    def __post_init__(self) -> None:
        if self.min_nodes < 1:
            raise ConfigError(f"AppConfig.min_nodes must be >= 1, got {self.min_nodes!r}")
        if not self.round_timeout > 0:
            raise ConfigError(f"AppConfig.round_timeout must be > 0 seconds, got {self.round_timeout!r}")
        if self.evaluate_every < 0:
            raise ConfigError(f"AppConfig.evaluate_every must be >= 0, got {self.evaluate_every!r}")

    @staticmethod
    def known_keys() -> frozenset[str]:
        """Every run-config key this class reads."""
        return frozenset(AppConfig().to_run_config()) | _OPTIONAL_FEDERATION_KEYS

    def to_run_config(self) -> dict[str, RunConfigValue]:
        """The flat kebab-case run config (every key, TOML-representable values)."""
        groups: list[dict[str, RunConfigValue]] = [
            dict(self.federation.to_run_config()),
            _dataclass_to_run_config(self.corpus, _CORPUS),
            _dataclass_to_run_config(self.base_model, _BASE),
            {
                "run-dir": self.run_dir,
                "min-nodes": self.min_nodes,
                "round-timeout": float(self.round_timeout),
                "evaluate-every": self.evaluate_every,
            },
        ]
        out: dict[str, RunConfigValue] = {}
        for group in groups:
            clash = sorted(set(out) & set(group))
            if clash:  # e.g. a new FederationConfig field named like a prefixed key
                raise ConfigError(f"run-config keys {clash} are defined twice; rename one of the fields")
            out |= group
        return out

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> "AppConfig":
        """Read a (possibly partial) run config; missing keys take their defaults.

        Raises
        ------
        ConfigError
            On an unknown key (a typo would otherwise silently run with a default) or a
            value a config class rejects.
        """
        unknown = sorted(set(run_config) - cls.known_keys())
        if unknown:
            raise ConfigError(f"unknown run-config keys {unknown}; known keys: {sorted(cls.known_keys())}")
        try:
            return cls(
                federation=FederationConfig.from_run_config(run_config),
                corpus=_dataclass_from_run_config(CorpusConfig, run_config, _CORPUS),
                base_model=_dataclass_from_run_config(BaseModelConfig, run_config, _BASE),
                run_dir=str(run_config.get("run-dir", "")),
                min_nodes=int(run_config.get("min-nodes", 2)),
                round_timeout=float(run_config.get("round-timeout", 3600.0)),
                evaluate_every=int(run_config.get("evaluate-every", 1)),
            )
        except TypeError as exc:
            raise ConfigError(f"bad run config: {exc}") from None
