"""Per-client commitment salts: the secret half of every embedding commitment.

A commitment on the ledger (:func:`~hyperfed.ledger.commitment.commit_embedding`) can be
opened only with its client's salt. Salts never leave the run directory and are destroyed
when the client is forgotten: without the salt, the commitments that stay on the chain
reveal nothing about the embedding, even to someone who guesses it.

The file (``RunDirectory.salts_path``, e.g. ``RUN/secrets/salts.json``) is JSON::

    {"format": "hyperfed-salts/1",
     "clients": {"alice": {"salt": "<64 hex>", "registration": "<commitment hex>"}, ...}}

``registration`` is the commitment the client was registered with (public, on the chain
too); keeping it here makes a repeated registration byte-identical, so a retry after a
crash is a replay rather than a conflicting second registration.

Every write replaces the file atomically (temp file + fsync + rename) with mode ``0600``
inside a ``0700`` folder.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from hyperfed.errors import CorruptFileError, DuplicateClientError
from hyperfed.ledger.commitment import SALT_BYTES
from hypernet.atomic import atomic_write_bytes

__all__ = ["SaltStore", "SaltEntry", "SALTS_FORMAT"]

log = logging.getLogger(__name__)

SALTS_FORMAT = "hyperfed-salts/1"


@dataclass(frozen=True)
class SaltEntry:
    """A client's secret salt and the commitment it was registered with."""

    salt: bytes
    registration: str


class SaltStore:
    """The salts of one run, in one JSON file (created on the first :meth:`add`).

    Parameters
    ----------
    path
        The salts file, usually ``RunDirectory.salts_path``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ reading

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptFileError(f"{self.path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != SALTS_FORMAT:
            raise CorruptFileError(f"{self.path} is not a {SALTS_FORMAT} file")
        clients = data.get("clients")
        if not isinstance(clients, dict):
            raise CorruptFileError(f"{self.path} has no 'clients' table")
        return clients

    def ids(self) -> list[str]:
        """Client ids that hold a salt, sorted."""
        return sorted(self._read())

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._read()

    def get(self, client_id: str) -> SaltEntry | None:
        """The client's salt and registration commitment, or ``None`` if it has none.

        Raises
        ------
        CorruptFileError
            The file or this client's entry is malformed.
        """
        entry = self._read().get(client_id)
        if entry is None:
            return None
        try:
            salt = bytes.fromhex(entry["salt"])
            registration = str(entry["registration"])
        except (KeyError, TypeError, ValueError):
            raise CorruptFileError(f"{self.path}: the entry of {client_id!r} is malformed") from None
        if len(salt) != SALT_BYTES:
            raise CorruptFileError(f"{self.path}: the salt of {client_id!r} is not {SALT_BYTES} bytes")
        return SaltEntry(salt, registration)

    def salt(self, client_id: str) -> bytes | None:
        """The client's salt, or ``None`` if it has none (never had, or destroyed)."""
        entry = self.get(client_id)
        return None if entry is None else entry.salt

    # ------------------------------------------------------------------ writing

    def _write(self, clients: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        body = {"format": SALTS_FORMAT, "clients": dict(sorted(clients.items()))}
        # atomic_write_bytes writes through mkstemp, which creates the file 0600; the
        # chmod below keeps it so even on platforms with another mkstemp mode.
        atomic_write_bytes(self.path, json.dumps(body, indent=1).encode("utf-8"))
        os.chmod(self.path, 0o600)

    def add(self, client_id: str, salt: bytes, registration: str) -> SaltEntry:
        """Store a new client's salt (durably, before its commitment is submitted).

        Raises
        ------
        DuplicateClientError
            The client already has a different salt.
        """
        if len(salt) != SALT_BYTES:
            raise ValueError(f"a salt is {SALT_BYTES} bytes, got {len(salt)}")
        entry = {"salt": salt.hex(), "registration": registration}
        with self._lock:
            clients = self._read()
            if client_id in clients:
                if clients[client_id] == entry:
                    return SaltEntry(salt, registration)
                raise DuplicateClientError(f"client {client_id!r} already has a salt in {self.path}")
            clients[client_id] = entry
            self._write(clients)
        return SaltEntry(salt, registration)

    def destroy(self, client_id: str) -> bool:
        """Delete the client's salt for good; ``False`` if it had none (idempotent).

        Its commitments, on the chain forever, can then never be opened.
        """
        with self._lock:
            clients = self._read()
            if client_id not in clients:
                return False
            del clients[client_id]
            self._write(clients)
        log.info("destroyed the commitment salt of client %r", client_id)
        return True
