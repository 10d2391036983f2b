"""The Flower ClientApp: answer the handshake, train the received adapter, evaluate it.

Each handler is a thin wrapper over the Flower-free client logic in
:mod:`hyperfed.federation.client_side`. The node's user client id comes from its node config
(:func:`~hyperfed.flower.handshake.resolve_client_id`); its data from the corpus named in
the run config. Flower component reference: ``hyperfed.flower.client_app:app``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from hyperfed.config import RunConfig, RunConfigValue
from hyperfed.federation import evaluate_splits, local_round
from hyperfed.flower import keys
from hyperfed.flower.cache import cached_client_model, cached_corpus
from hyperfed.flower.errors import ClientIdentityError, MalformedReplyError
from hyperfed.flower.handshake import identity_reply, resolve_client_id
from hyperfed.flower.records import evaluation_to_content, record_to_adapter, reply_to_content
from hypernet import ClientData
from hypernet.errors import UnknownClientError

__all__ = ["app", "build_client_app", "client_identity", "client_data"]

log = logging.getLogger(__name__)

# Node-local state (context.state) survives between the messages of a run even where every
# message runs in a fresh process (a deployed SuperNode), so the node's id and data are
# kept there instead of rebuilding the corpus for each message.
_STATE_META = "hyperfed.node"
_STATE_DATA = "hyperfed.client-data"


def _run_config(context: Context, defaults: Mapping[str, RunConfigValue]) -> RunConfig:
    run_config, _ = keys.split_replay_keys({**defaults, **context.run_config})  # a replay is the server's business
    return RunConfig.from_run_config(run_config)


def _state_tag(config: RunConfig) -> str:
    return repr(config.corpus)


def client_identity(context: Context, config: RunConfig) -> str:
    """This node's user client id (remembered in ``context.state`` after the first call)."""
    meta = context.state.config_records.get(_STATE_META)
    if meta is not None and meta.get("corpus") == _state_tag(config):
        return str(meta[keys.CLIENT_ID])
    corpus_ids = None
    if keys.CLIENT_ID not in context.node_config:  # partition-id → the corpus's order
        corpus_ids = cached_corpus(config.corpus).client_ids
    client_id = resolve_client_id(context.node_config, corpus_ids)
    context.state[_STATE_META] = ConfigRecord({keys.CLIENT_ID: client_id, "corpus": _state_tag(config)})
    return client_id


def client_data(context: Context, config: RunConfig, client_id: str) -> ClientData:
    """The client's train/val blocks (from ``context.state`` when this node loaded them before).

    Raises
    ------
    UnknownClientError
        If the corpus has no client ``client_id``.
    """
    cached = context.state.array_records.get(_STATE_DATA)
    if cached is not None and client_identity(context, config) == client_id:
        blocks = cached.to_torch_state_dict()
        return ClientData(train=blocks["train"], val=blocks["val"], test=blocks.get("test"))
    corpus = cached_corpus(config.corpus)
    if client_id not in corpus.clients:
        raise UnknownClientError(f"the corpus has no client {client_id!r}; its clients are {corpus.client_ids}")
    data = corpus.clients[client_id]
    splits = {"train": data.train, "val": data.val} | ({} if data.test is None else {"test": data.test})
    context.state[_STATE_DATA] = ArrayRecord(splits)
    return data


def _received(message: Message, client_id: str) -> tuple[dict[str, torch.Tensor], int]:
    """The adapter and round of a server message addressed to ``client_id``."""
    config = message.content.config_records.get(keys.CONFIG, ConfigRecord())
    addressed_to = config.get(keys.CLIENT_ID, client_id)
    if addressed_to != client_id:
        raise ClientIdentityError(f"received the adapter of client {addressed_to!r}, but this node is {client_id!r}")
    arrays = message.content.array_records.get(keys.ARRAYS)
    if arrays is None:
        raise MalformedReplyError(f"the server message has no ArrayRecord {keys.ARRAYS!r}")
    return record_to_adapter(arrays), int(config.get(keys.SERVER_ROUND, 0))


def build_client_app(defaults: Mapping[str, RunConfigValue] | None = None) -> ClientApp:
    """A ClientApp whose run config is ``defaults`` overridden by ``context.run_config``.

    ``flwr run`` passes the full run config through the context, so the module-level
    :data:`app` needs no defaults; ``defaults`` serves runtimes that pass none (the
    deprecated ``flwr.simulation.run_simulation``).
    """
    defaults = dict(defaults or {})
    client_app = ClientApp()

    @client_app.query()
    def identify(message: Message, context: Context) -> Message:
        """Handshake: answer with this node's user client id."""
        return identity_reply(message, client_identity(context, _run_config(context, defaults)))

    @client_app.train()
    def train(message: Message, context: Context) -> Message:
        """Fine-tune the received adapter on this client's data; reply with the result."""
        config = _run_config(context, defaults)
        client_id = client_identity(context, config)
        adapter, server_round = _received(message, client_id)
        data = client_data(context, config, client_id)
        model = cached_client_model(config.base_model, config.federation.lora_rank)
        reply = local_round(model, adapter, data, config.federation, server_round, client_id)
        log.info("client %r, round %d: train loss %.4f", client_id, server_round, reply.train_loss)
        return Message(reply_to_content(reply), reply_to=message)

    @client_app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        """Validation and test loss of the received adapter on this client's held-out blocks
        (after local fine-tuning chosen on validation, for a method that fine-tunes)."""
        config = _run_config(context, defaults)
        client_id = client_identity(context, config)
        adapter, server_round = _received(message, client_id)
        data = client_data(context, config, client_id)
        model = cached_client_model(config.base_model, config.federation.lora_rank)
        evaluation = evaluate_splits(model, adapter, data, config.federation, server_round, client_id)
        return Message(evaluation_to_content(evaluation, int(data.val.shape[0])), reply_to=message)

    return client_app


#: The Flower component ``hyperfed.flower.client_app:app``.
app = build_client_app()
