"""The forget-mode registry: how each mode builds the post-forget hypernetwork.

Every mode shares the rest of :func:`~hyperfed.unlearning.forget.forget_client` (journal,
purge of every checkpoint and adapter, salt destruction, regeneration, ledger record); a
mode only decides what the new latest checkpoint is. A new mode is one module with a
``model_step(run_dir, journal)`` function — it must write checkpoint ``journal["round"]``
without ``journal["client_id"]`` and be idempotent (a crash re-runs it) — plus one line in
:data:`FORGET_MODES`. The CLI takes its ``--mode`` choices from here, so this module
imports nothing heavy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hypernet.errors import ConfigError

if TYPE_CHECKING:
    from hyperfed.rundir import RunDirectory

__all__ = ["ForgetMode", "FORGET_MODES", "forget_mode"]


@dataclass(frozen=True)
class ForgetMode:
    """A registered forget mode: a one-line summary, its model step (``"module:function"``,
    imported on first use), and whether it replays the rounds without the client (then its
    guarantee is exact under any shared-weight policy, else the policy's:
    :func:`hyperfed.federation.privacy.forget_guarantee`)."""

    summary: str
    model_step: str
    replays: bool = False

    def build_model(self, run_dir: RunDirectory, journal: dict[str, Any]) -> None:
        module, name = self.model_step.split(":")
        step: Callable[[RunDirectory, dict[str, Any]], None] = getattr(importlib.import_module(module), name)
        step(run_dir, journal)


#: name -> mode.
FORGET_MODES: dict[str, ForgetMode] = {
    "delete": ForgetMode(
        "drop the client's embedding and optimizer state; shared weights stay as they are",
        "hyperfed.unlearning.forget:delete_model_step",
    ),
    "exact": ForgetMode(
        "roll back before the client's first round and replay the later rounds without it",
        "hyperfed.unlearning.replay:exact_model_step",
        replays=True,
    ),
}


def forget_mode(name: str) -> ForgetMode:
    """The registered mode ``name``.

    Raises
    ------
    ConfigError
        For a name that is not registered.
    """
    mode = FORGET_MODES.get(name)
    if mode is None:
        raise ConfigError(f"forget mode must be one of {tuple(FORGET_MODES)}, got {name!r}")
    return mode
