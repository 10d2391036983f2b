"""Which user client runs on which Flower node: the strategy's one source of that mapping.

Flower node ids are random per connection and the server cannot read a node's config, so
:class:`ClientDirectory` learns the mapping with the client-id handshake
(:func:`~hyperfed.flower.handshake.query_client_ids`) and keeps it up to date as nodes join,
reconnect or fail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from flwr.serverapp import Grid

from hyperfed.flower.errors import ClientIdentityError
from hyperfed.flower.handshake import query_client_ids

__all__ = ["ClientDirectory", "wait_for_nodes"]

log = logging.getLogger(__name__)


def wait_for_nodes(grid: Grid, min_nodes: int, timeout: float) -> int:
    """Like Flower's ``sample_nodes(grid, min_nodes, 0)`` (the node list starts empty), but
    gives up after ``timeout`` seconds and goes on with the nodes that came; returns how many."""
    deadline = time.monotonic() + timeout
    while (connected := len(list(grid.get_node_ids()))) < min_nodes:
        if time.monotonic() >= deadline:
            log.warning(
                "only %d of %d nodes connected within %.0f s; going on with them", connected, min_nodes, timeout
            )
            return connected
        log.info("waiting for nodes: %d of %d connected", connected, min_nodes)
        time.sleep(1.0)
    return connected


class ClientDirectory:
    """``client id ↔ node id`` for the nodes that identified themselves.

    Parameters
    ----------
    timeout
        Seconds to wait for handshake answers.
    only
        If given, the only client ids that take part (an exact forget's replay: the clients
        left); a node claiming another id is logged and never asked again.
    """

    def __init__(self, timeout: float = 3600.0, only: Iterable[str] | None = None) -> None:
        self.timeout = timeout
        self.only = None if only is None else frozenset(only)
        self.node_of: dict[str, int] = {}  # user client id → Flower node id
        self.client_of: dict[int, str] = {}  # Flower node id → user client id
        self._failed: set[int] = set()  # nodes that failed the handshake: not asked again

    def __len__(self) -> int:
        return len(self.node_of)

    def client_ids(self) -> list[str]:
        """Known client ids, sorted (independent of node ids and arrival order)."""
        return sorted(self.node_of)

    def connected(self, grid: Grid, client_ids: Iterable[str] | None = None) -> list[str]:
        """Known clients (or those of ``client_ids``) whose node is connected now, sorted."""
        present = set(grid.get_node_ids())
        ids = self.node_of if client_ids is None else client_ids
        return sorted(c for c in ids if self.node_of.get(c) in present)

    def identify_new_nodes(self, grid: Grid) -> list[str]:
        """Handshake with nodes not seen before; return the newly identified client ids.

        A client that reconnects under a new node id is remapped; a second live node
        claiming an id that another live node holds is ignored with an error in the log.
        """
        present = set(grid.get_node_ids())
        new = sorted(present - set(self.client_of) - self._failed)
        if not new:
            return []
        found = query_client_ids(grid, new, self.timeout)
        self._failed |= set(new) - set(found)
        added = []
        for node, client_id in sorted(found.items()):
            if self.only is not None and client_id not in self.only:
                log.warning("node %d is client %r, which takes no part in this run; ignoring it", node, client_id)
                self._failed.add(node)
                continue
            old = self.node_of.get(client_id)
            if old is not None and old in present:
                log.error("nodes %d and %d both claim client id %r; ignoring node %d", old, node, client_id, node)
                self._failed.add(node)
                continue
            if old is not None:
                log.info("client %r reconnected as node %d (was %d)", client_id, node, old)
                del self.client_of[old]
            self.node_of[client_id] = node
            self.client_of[node] = client_id
            added.append(client_id)
        log.info("handshake: %d new clients, %d known", len(added), len(self.node_of))
        return sorted(added)

    def require_clients(self, required: Iterable[str] = ()) -> None:
        """Raise :class:`ClientIdentityError` if no node identified itself, or if one of
        ``required`` did not."""
        if not self.node_of:
            raise ClientIdentityError("no node answered the client-id handshake; see the warnings above")
        missing = sorted(set(required) - set(self.node_of))
        if missing:
            raise ClientIdentityError(
                f"{len(missing)} required clients did not connect and identify themselves: {missing}"
            )
