"""The embedded ledger (the default backend): one SQLite file that behaves like a Fabric peer.

* :class:`EmbeddedLedger` (:mod:`~hyperfed.ledger.embedded.ledger`) — the backend: the real
  contract simulated against committed state, MVCC-checked, committed as hash-chained blocks;
* :mod:`~hyperfed.ledger.embedded.stub` — the chaincode stub that plays the peer for the contract;
* :mod:`~hyperfed.ledger.embedded.chain` — blocks, their hashes and chain verification.
"""

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from hyperfed.errors import ConfigError
from hyperfed.ledger.embedded.chain import Block, Problem, VerifyReport
from hyperfed.ledger.embedded.ledger import EmbeddedLedger, new_tx_id
from hyperfed.ledger.embedded.stub import Simulation

__all__ = ["EmbeddedLedger", "Simulation", "Block", "Problem", "VerifyReport", "new_tx_id", "open_url"]


def open_url(url: str, options: dict[str, Any]) -> EmbeddedLedger:
    """``sqlite:///abs/path.db`` or ``sqlite://relative/path.db``; query parameters and
    ``options`` become keyword arguments of :class:`EmbeddedLedger`."""
    parts = urlsplit(url)
    path = parts.netloc + parts.path  # "sqlite:///abs" -> "/abs", "sqlite://rel/x" -> "rel/x"
    if not path:
        raise ConfigError(f"ledger URL {url!r} names no file")
    return EmbeddedLedger(path, **{**dict(parse_qsl(parts.query)), **options})
