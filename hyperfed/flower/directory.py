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
    """

    def __init__(self, timeout: float = 3600.0) -> None:
        self.timeout = timeout
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

    def require_clients(self) -> None:
        """Raise :class:`ClientIdentityError` if no node identified itself."""
        if not self.node_of:
            raise ClientIdentityError("no node answered the client-id handshake; see the warnings above")
