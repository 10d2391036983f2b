"""PEP 562 lazy attributes for a package ``__init__``: names load on first use.

``import hypernet`` (or ``hyperfed``, ``hyperfed.unlearning``) must stay light — an error
class or ``--help`` must not pay for torch or peft — while ``from hypernet import HyperLoRA``
keeps working. A package declares ``name -> module`` once and gets its ``__getattr__`` and
``__dir__`` from :func:`lazy_attributes`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, names: Mapping[str, str], public: Sequence[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``names`` maps an attribute to the module
    that defines it (imported on first access, then cached in the package's namespace)."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)  # next time: a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(public)

    return __getattr__, __dir__
