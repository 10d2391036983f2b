"""Public pretraining of the hypernetwork: shared weights learn from text no client owns.

Under the ``frozen`` policy the shared weights never learn from a client, so a delete is
exact — but shared weights left at their random initialisation make HyperLoRA little more
than local training. :func:`pretrain_on_public` first trains a HyperLoRA the ordinary way
(policy ``shared``: trunk, heads and base adapters learn, through the same
:func:`~hyperfed.federation.loop.run_rounds` and :class:`HyperLoRAServer` as the run) on
*public pseudo-clients* (:func:`hyperfed.data.corpus.public_clients`: one per pretraining
source of the corpus), then removes the pseudo-clients (embeddings, residuals and their
optimizer state). The real run starts from that generator and, under ``frozen``, never
changes its shared weights: "frozen on public data → exact".

Everything is a function of (config, base model): the forget report's gold retraining
(:func:`hyperfed.unlearning.report.forget_and_verify`) calls :func:`make_run_server` too and
gets the same generator (from an in-process cache when the same process already built it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from hyperfed.data.corpus import CorpusConfig, public_clients
from hyperfed.federation.config import FederationConfig
from hyperfed.federation.loop import run_rounds
from hyperfed.federation.methods import make_server
from hyperfed.federation.servers import AdapterServer, HyperLoRAServer, RoundOutcome, make_hyperlora_server
from hypernet import ClientData, HyperLoRA

__all__ = ["PublicPretraining", "pretrain_on_public", "publicly_pretrained", "make_run_server"]

log = logging.getLogger(__name__)


@dataclass
class PublicPretraining:
    """A generator pretrained on public pseudo-clients, which it no longer holds.

    ``mean_embedding``: the mean of the pseudo-clients' final embeddings (public: a start for
    real clients that depends on none of them); ``round``: the pretraining round kept
    (lowest public validation loss; 0 = none helped); ``val_before`` / ``val_after``: each
    pseudo-client's validation loss with its generated adapter before and at that round.
    """

    hypernet: HyperLoRA
    mean_embedding: torch.Tensor
    pseudo_clients: list[str]
    round: int
    seconds: float
    val_before: dict[str, float] = field(default_factory=dict)
    val_after: dict[str, float] = field(default_factory=dict)


def pretrain_on_public(
    peft_model: nn.Module, config: FederationConfig, public: Mapping[str, ClientData], rounds: int | None = None
) -> PublicPretraining:
    """Train a fresh HyperLoRA on ``public`` for up to ``rounds`` (default
    ``config.public_pretrain_rounds``) rounds with the run's local and server settings,
    every pseudo-client in every round and the shared weights learning; keep the round (0
    included) with the lowest mean *public* validation loss, the earliest on a tie; then
    remove the pseudo-clients. ``peft_model`` is not modified (the rounds train a copy)."""
    from hyperfed.federation.loop import evaluate_all

    rounds = config.public_pretrain_rounds if rounds is None else rounds
    start = time.perf_counter()
    model = copy.deepcopy(peft_model)
    fed = replace(_pretraining_config(config), rounds=max(rounds, 1))
    server = make_hyperlora_server(model, fed)
    ids = sorted(public)
    before = evaluate_all(server, model, public)
    log.info("public pretraining: %d pseudo-clients, up to %d rounds, val %.4f", len(ids), rounds, _mean(before))
    best = _Best(before, 0, copy.deepcopy(server.hypernet))

    def keep_best(outcome: RoundOutcome) -> None:
        losses = evaluate_all(server, model, public)
        log.info("public pretraining round %d: pseudo-clients' mean val loss %.4f", outcome.round, _mean(losses))
        if _mean(losses) < _mean(best.losses):
            best.losses, best.round, best.hypernet = losses, outcome.round, copy.deepcopy(server.hypernet)

    if rounds:
        run_rounds(server, model, public, fed, callback=keep_best)
    hypernet = best.hypernet
    with torch.no_grad():
        mean = torch.stack([hypernet.client_parameter(c).detach() for c in ids]).mean(0).clone()
    for cid in ids:
        hypernet.remove_client(cid)  # a copy: no optimizer holds its parameters
    seconds = time.perf_counter() - start
    log.info(
        "public pretraining: kept round %d of %d (val %.4f -> %.4f) in %.1f s",
        best.round,
        rounds,
        _mean(before),
        _mean(best.losses),
        seconds,
    )
    return PublicPretraining(hypernet, mean, ids, best.round, seconds, before, best.losses)


@dataclass
class _Best:
    losses: dict[str, float]
    round: int
    hypernet: HyperLoRA


#: fingerprint → pretraining; a forget report in the process that trained the run reuses it.
_CACHE: OrderedDict[str, PublicPretraining] = OrderedDict()
_CACHE_SIZE = 2


def publicly_pretrained(peft_model: nn.Module, config: FederationConfig, corpus: CorpusConfig) -> PublicPretraining:
    """:func:`pretrain_on_public` on :func:`~hyperfed.data.corpus.public_clients` of
    ``corpus``, each pseudo-client with *all* of its source (public text is plentiful; cut to
    a client's budget they overfit within a few rounds: measured on the demo corpus, their
    validation loss rose from round 0 on); the same (config, corpus, base weights) in one
    process is trained once and handed out as copies."""
    key = _fingerprint(peft_model, config, corpus)
    if key not in _CACHE:
        _CACHE[key] = pretrain_on_public(peft_model, config, public_clients(corpus, train_kib=math.inf))
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    else:
        log.info("public pretraining: reusing this process's pretrained generator")
    return copy.deepcopy(_CACHE[key])


def make_run_server(
    method: str, peft_model: nn.Module, config: FederationConfig, corpus: CorpusConfig, mean_init: bool = True
) -> AdapterServer:
    """The server ``method`` starts a run with: for HyperLoRA with
    ``config.public_pretrain_rounds > 0`` built on the publicly pretrained generator, new
    clients starting from the pseudo-clients' mean embedding when ``mean_init``; otherwise
    :func:`~hyperfed.federation.methods.make_server`."""
    if method != "hyperlora" or not config.public_pretrain_rounds:
        return make_server(method, peft_model, config)
    pre = publicly_pretrained(peft_model, config, corpus)
    server = make_server("hyperlora", peft_model, config, hypernet=pre.hypernet)
    if mean_init and isinstance(server, HyperLoRAServer):
        server.initial_embedding = pre.mean_embedding
    return server


def _pretraining_config(config: FederationConfig) -> FederationConfig:
    """The run's settings as the pretraining uses them: shared weights learn, every
    pseudo-client takes part in every round (the server holds the public text)."""
    return replace(
        config,
        method="hyperlora",
        shared_policy="shared",
        sample_rate=1.0,
        rounds=max(config.public_pretrain_rounds, 1),
    )


def _fingerprint(peft_model: nn.Module, config: FederationConfig, corpus: CorpusConfig) -> str:
    """What the pretraining is a function of: its config, the corpus and every weight of the model."""
    settings = [_pretraining_config(config).to_dict(), repr(corpus)]
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in peft_model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _mean(losses: Mapping[str, float]) -> float:
    return sum(losses.values()) / len(losses) if losses else float("nan")
