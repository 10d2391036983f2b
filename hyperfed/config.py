"""One run configuration for every engine, and its one kebab-case codec for Flower.

:class:`RunConfig` is the whole tree::

    RunConfig
      federation   FederationConfig   method, rounds, sampling, seed, LoRA rank
        local        LocalTrainConfig   what each client runs per round   (hypernet)
        server       TrainerConfig      how the server learns from replies  (hypernet)
      corpus       CorpusConfig       which clients, how much text each
      base_model   BaseModelConfig    the cached base model every node loads
      evaluation   EvaluationConfig   how often every client is evaluated
      ledger       LedgerSettings     where the run is recorded
      methods, engine                 what ``run_experiment`` compares, and how
      run_dir, min_nodes, round_timeout   the Flower ServerApp's runtime

Both engines — :func:`hyperfed.experiment.run_experiment` and the Flower ServerApp under
``flwr run`` or a deployment — write it as ``RUN/run.json`` (:meth:`RunConfig.to_dict`), so
forget, its verification report and the audit work on a run made either way.

A Flower run config is flat: :meth:`RunConfig.to_run_config` / :meth:`from_run_config` map
the tree to kebab-case keys, a section's keys carrying its prefix (``local-steps``,
``server-lr``, ``corpus-train-kib``, ``base-model-steps``, ``evaluate-every``,
``ledger-url``); the federation's own keys and the top-level ones are unprefixed
(``rounds``, ``run-dir``). Tuples travel as comma-separated strings; a field whose default
is ``None`` is left out until it is set.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import tomllib

from hyperfed.base_model import BaseModelConfig
from hyperfed.data.corpus import CorpusConfig
from hyperfed.federation.config import FederationConfig
from hyperfed.ledger.records import DEFAULT_WRITER_MSP
from hypernet.errors import ConfigError

__all__ = ["RunConfig", "EvaluationConfig", "LedgerSettings", "RunConfigValue", "ENGINES", "DEFAULT_WRITER_MSP"]

RunConfigValue = bool | int | float | str

ENGINES = ("flower", "loop")

#: Section field name -> the prefix of its keys in a flat Flower run config.
_PREFIXES = {
    "federation": "",
    "local": "local-",
    "server": "server-",
    "corpus": "corpus-",
    "base_model": "base-model-",
    "evaluation": "evaluate-",
    "ledger": "ledger-",
}
#: Fields set from elsewhere in the tree, so they have no key of their own
#: (the federation's ``seed`` seeds both the server trainer and every client's round).
_DERIVED = frozenset({"federation.local.seed", "federation.server.seed"})


@dataclass(frozen=True)
class EvaluationConfig:
    """Every client is evaluated before round 1, every ``every`` rounds, and after the last."""

    every: int = 5

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ConfigError(f"EvaluationConfig.every must be >= 0 (0: first and last only), got {self.every!r}")


@dataclass(frozen=True)
class LedgerSettings:
    """Where the run is recorded: ``url`` ``""`` = the embedded ``RUN/ledger.db``; else any
    :func:`hyperfed.ledger.open_ledger` URL. ``writer_msp`` is the one MSP allowed to write.
    ``identity`` is the folder of the writer's signing identity (``cert.pem`` + ``key.pem``,
    or an MSP folder with ``signcerts/`` + ``keystore/``) that signs the embedded ledger's
    blocks; ``""`` = the per-user dev identity under ``$HYPERFED_HOME`` (default
    ``~/.config/hyperfed``), created on first use. Never put it inside the run directory."""

    url: str = ""
    writer_msp: str = DEFAULT_WRITER_MSP
    identity: str = ""

    def __post_init__(self) -> None:
        if not self.writer_msp:
            raise ConfigError("LedgerSettings.writer_msp must name an MSP, got ''")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, for either engine (see the module docstring).

    Attributes
    ----------
    methods
        What :func:`~hyperfed.experiment.run_experiment` compares (names from the method
        registry, :data:`hyperfed.federation.METHODS`); a Flower run trains
        ``federation.method``.
    engine
        ``"flower"`` (the ServerApp strategy and ClientApps on an in-process grid) or
        ``"loop"`` (the same server and client code in a plain Python loop).
    run_dir
        Where a Flower ServerApp writes the run (``""``: nowhere).
    min_nodes, round_timeout
        Nodes a ServerApp waits for before the handshake; seconds it waits for a round.
    """

    federation: FederationConfig = field(default_factory=FederationConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    base_model: BaseModelConfig = field(default_factory=BaseModelConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    methods: tuple[str, ...] = ("hyperlora", "fedavg", "local")
    engine: str = "flower"
    run_dir: str = ""
    min_nodes: int = 2
    round_timeout: float = 3600.0

    def __post_init__(self) -> None:
        from hyperfed.federation.methods import METHODS  # registry; imports the servers

        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"RunConfig.methods: unknown {unknown}; choose from {list(METHODS)}")
        if self.engine not in ENGINES:
            raise ConfigError(f"RunConfig.engine must be one of {ENGINES}, got {self.engine!r}")
        if self.min_nodes < 1:
            raise ConfigError(f"RunConfig.min_nodes must be >= 1, got {self.min_nodes!r}")
        if not self.round_timeout > 0:
            raise ConfigError(f"RunConfig.round_timeout must be > 0 seconds, got {self.round_timeout!r}")
        # the corpus is tokenized by the base model's own tokenizer: derived unless given
        if self.base_model.name and not self.corpus.tokenizer:
            object.__setattr__(self, "corpus", replace(self.corpus, tokenizer=self.base_model.name))
        elif self.corpus.tokenizer != self.base_model.name:
            raise ConfigError(
                f"corpus.tokenizer {self.corpus.tokenizer!r} differs from base_model.name {self.base_model.name!r}; "
                "leave corpus.tokenizer unset (it follows the base model)"
            )
        # the public pseudo-clients are cut from the text the base model did not see: derived too
        if self.base_model.public_share and not self.corpus.public_share:
            object.__setattr__(self, "corpus", replace(self.corpus, public_share=self.base_model.public_share))
        elif self.corpus.public_share != self.base_model.public_share:
            raise ConfigError(
                f"corpus.public_share {self.corpus.public_share!r} differs from base_model.public_share "
                f"{self.base_model.public_share!r}; leave corpus.public_share unset (it follows the base model)"
            )

    def with_method(self, method: str) -> RunConfig:
        """The same run training ``method``."""
        return replace(self, federation=replace(self.federation, method=method))

    # -------------------------------------------------------------- run.json
    def to_dict(self) -> dict[str, Any]:
        """The nested form written as ``run.json`` (tuples as lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are an
        error that names them (a typo would otherwise run silently with a default)."""
        return _build(cls(), data, "")

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        """Read a TOML or JSON file with the sections of :meth:`to_dict`."""
        path = Path(path)
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc})") from None
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot parse ({exc})") from None
        return cls.from_dict(data)

    # ------------------------------------------------------ Flower run config
    def to_run_config(self) -> dict[str, RunConfigValue]:
        """The flat kebab-case run config (every key, TOML-representable values)."""
        out: dict[str, RunConfigValue] = {}
        _flatten(self, "", "", out)
        return out

    @classmethod
    def known_keys(cls) -> frozenset[str]:
        """Every run-config key :meth:`from_run_config` reads (optional ones included)."""
        out: dict[str, RunConfigValue] = {}
        _flatten(cls(), "", "", out, keep_none=True)
        return frozenset(out)

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> RunConfig:
        """Read a (possibly partial) flat run config; missing keys take their defaults.

        Raises
        ------
        ConfigError
            On an unknown key or a value a config class rejects.
        """
        unknown = sorted(set(run_config) - cls.known_keys())
        if unknown:
            raise ConfigError(f"unknown run-config keys {unknown}; known keys: {sorted(cls.known_keys())}")
        return _unflatten(cls(), run_config, "", "")


# ----------------------------------------------------------------------- codec helpers
def _kebab(name: str) -> str:
    return name.replace("_", "-")


def _flatten(obj: Any, path: str, prefix: str, out: dict[str, RunConfigValue], keep_none: bool = False) -> None:
    for f in fields(obj):
        value, dotted = getattr(obj, f.name), f"{path}{f.name}"
        if is_dataclass(value):
            _flatten(value, dotted + ".", prefix + _PREFIXES[f.name], out, keep_none)
        elif dotted in _DERIVED:
            continue
        elif value is None:
            if keep_none:
                out[prefix + _kebab(f.name)] = ""
        else:
            key = prefix + _kebab(f.name)
            if key in out:  # e.g. a new field named like a prefixed key of another section
                raise ConfigError(f"run-config key {key!r} is defined twice; rename one of the fields")
            out[key] = ",".join(value) if isinstance(value, tuple) else value


def _coerce(default: Any, value: Any) -> Any:
    """A run-config value in the type of the field's default (TOML and Flower give ``1``
    for ``1.0``, and strings for tuples)."""
    if isinstance(default, tuple):
        return (
            tuple(part.strip() for part in str(value).split(",") if part.strip())
            if isinstance(value, str)
            else tuple(value)
        )
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _unflatten(default: Any, run_config: Mapping[str, Any], path: str, prefix: str) -> Any:
    """``default`` (a config instance: a section's own default, e.g. the federation's
    server part, not its class's) with the values ``run_config`` gives."""
    values: dict[str, Any] = {}
    for f in fields(default):
        current, dotted = getattr(default, f.name), f"{path}{f.name}"
        if is_dataclass(current):
            values[f.name] = _unflatten(current, run_config, dotted + ".", prefix + _PREFIXES[f.name])
        elif dotted not in _DERIVED and (key := prefix + _kebab(f.name)) in run_config:
            values[f.name] = _coerce(current, run_config[key])
    try:
        return replace(default, **values)
    except TypeError as exc:
        raise ConfigError(f"bad run config: {exc}") from None


def _build(default: Any, data: Mapping[str, Any], path: str) -> Any:
    """``default`` (a config instance) with the values of its ``asdict`` form ``data``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section {path or 'root'!r} must be a table, got {type(data).__name__}")
    known = {f.name for f in fields(default)}
    unknown = sorted(set(data) - known)
    if unknown:
        where = f"section {path!r}" if path else "the run config"
        raise ConfigError(f"unknown keys {unknown} in {where}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        current = getattr(default, name)
        dotted = f"{path}.{name}" if path else name
        values[name] = _build(current, value, dotted) if is_dataclass(current) else _coerce(current, value)
    try:
        return replace(default, **values)
    except TypeError as exc:
        raise ConfigError(f"bad config section {path or 'root'!r}: {exc}") from None
