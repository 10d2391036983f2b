"""The client-id handshake: which user client runs on which Flower node.

The server cannot read a node's ``node_config``, and Flower node ids are random per
connection, so before training the ServerApp sends a QUERY message to every node and each
ClientApp answers with its user client id (:func:`resolve_client_id`). Embeddings, sampling
and results then follow user ids, never node ids.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from hyperfed.flower import keys
from hyperfed.flower.errors import ClientIdentityError

__all__ = ["query_client_ids", "resolve_client_id", "identity_reply"]

log = logging.getLogger(__name__)


def resolve_client_id(node_config: Mapping[str, object], corpus_client_ids: Sequence[str] | None = None) -> str:
    """The user client id of a node, from its ``node_config``.

    Parameters
    ----------
    node_config
        A deployment SuperNode sets ``client-id`` (``--node-config "client-id='code/asyncio'"``);
        a virtual SuperNode of the Simulation Engine has ``partition-id`` instead.
    corpus_client_ids
        The corpus's client ids; ``partition-id`` *i* is client ``corpus_client_ids[i]``.

    Raises
    ------
    ClientIdentityError
        If neither key is set, or ``partition-id`` is outside the corpus.
    """
    if keys.CLIENT_ID in node_config:
        client_id = str(node_config[keys.CLIENT_ID]).strip()
        if not client_id:
            raise ClientIdentityError("the node config sets an empty client-id")
        return client_id
    if keys.PARTITION_ID in node_config:
        partition = int(node_config[keys.PARTITION_ID])  # type: ignore[call-overload]
        ids = list(corpus_client_ids or [])
        if not 0 <= partition < len(ids):
            raise ClientIdentityError(
                f"partition-id {partition} is outside the corpus's {len(ids)} clients; "
                "run at most that many SuperNodes or choose a bigger corpus"
            )
        return ids[partition]
    raise ClientIdentityError(
        f"the node config {dict(node_config)} names no client: start the SuperNode with "
        "--node-config \"client-id='<your client id>'\""
    )


def identity_reply(message: Message, client_id: str) -> Message:
    """The ClientApp's answer to the handshake query."""
    return Message(RecordDict({keys.IDENTITY: ConfigRecord({keys.CLIENT_ID: client_id})}), reply_to=message)


def query_client_ids(grid: Grid, node_ids: Sequence[int], timeout: float) -> dict[int, str]:
    """Ask each of ``node_ids`` for its client id; return ``node id → client id``.

    Nodes that answer with an error, a malformed answer or not at all are logged and left
    out; the caller decides what to do without them.
    """
    messages = [
        Message(RecordDict({keys.CONFIG: ConfigRecord({})}), dst_node_id=node, message_type=MessageType.QUERY)
        for node in node_ids
    ]
    replies = grid.send_and_receive(messages, timeout=timeout) if messages else []
    found: dict[int, str] = {}
    for reply in replies:
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("node %d failed the client-id handshake: %s", node, reply.error.reason)
            continue
        identity = reply.content.config_records.get(keys.IDENTITY)
        client_id = identity.get(keys.CLIENT_ID) if identity is not None else None
        if not isinstance(client_id, str) or not client_id:
            log.warning("node %d answered the handshake without a client id", node)
            continue
        found[node] = client_id
    answered = {reply.metadata.src_node_id for reply in replies}
    for node in sorted(set(node_ids) - answered):
        log.warning("node %d did not answer the client-id handshake within %.0f s", node, timeout)
    return found
