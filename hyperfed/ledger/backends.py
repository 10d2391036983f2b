"""Ledger backends by URL scheme: the one registry :func:`open_ledger` reads.

A new backend is one module with an ``open_url(url, options) -> LedgerBackend`` function
and one line in :data:`BACKENDS`. Modules are imported only when their scheme is used, so
``sqlite://`` never imports grpc and ``fabric+gateway://`` never imports sqlite3 machinery
it does not need.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from hyperfed.errors import ConfigError
from hyperfed.ledger.base import LedgerBackend

__all__ = ["BACKENDS", "open_ledger"]

#: URL scheme -> module whose ``open_url(url, options)`` opens that backend.
BACKENDS: dict[str, str] = {
    "sqlite": "hyperfed.ledger.embedded",
    "fabric+gateway": "hyperfed.ledger.gateway",
}


def open_ledger(url: str | Path, **options: Any) -> LedgerBackend:
    """Open the ledger backend named by ``url``.

    Parameters
    ----------
    url
        A file path or ``sqlite://`` URL (embedded ledger), or any scheme in
        :data:`BACKENDS` (``fabric+gateway://`` for a Fabric network).
    **options
        Keyword arguments for the backend; they override the URL's query parameters.

    Raises
    ------
    ConfigError
        Unknown scheme or a URL the backend cannot use.
    """
    text = str(url)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if not scheme:  # a plain path: the embedded ledger
        from hyperfed.ledger.embedded import EmbeddedLedger

        return EmbeddedLedger(Path(text), **options)
    module = BACKENDS.get(scheme)
    if module is None:
        known = ", ".join(f"{s}://" for s in BACKENDS)
        raise ConfigError(f"unknown ledger URL scheme in {text!r}; use a path or one of {known}")
    backend: LedgerBackend = importlib.import_module(module).open_url(text, options)
    return backend
