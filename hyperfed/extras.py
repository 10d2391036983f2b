"""Optional extras: a clear error when a feature's packages are missing.

``pip install hyperfed`` installs the core (hypernetwork, in-process Flower federation,
embedded ledger, audit). ``simulation`` adds Flower's Ray Simulation Engine, ``fabric``
the Fabric Gateway client's packages, ``notebooks`` the notebook runner; ``all`` is all of
them. A module that needs an extra calls :func:`require_extra` before importing it.
"""

from __future__ import annotations

import importlib.util

from hyperfed.errors import MissingExtraError

__all__ = ["require_extra"]


def require_extra(extra: str, *modules: str, feature: str) -> None:
    """Raise :class:`MissingExtraError` unless every top-level module in ``modules`` is
    installed (found, not imported: the check costs no import time).

    Examples
    --------
    >>> require_extra("simulation", "ray", feature="Flower's Simulation Engine")
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtraError(
            f"{feature} needs {', '.join(missing)}, which is not installed: pip install 'hyperfed[{extra}]'"
        )
