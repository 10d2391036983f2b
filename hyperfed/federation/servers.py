"""Server-side logic of the three methods, free of any Flower type.

Every method answers the same three questions, so one thin Flower strategy drives them all
and they are compared on exactly the same budget:

* ``configure_round(round, client_ids)`` → the adapter to send to each sampled client;
* ``aggregate_round(round, replies)`` → screen the replies, learn from the accepted ones;
* ``adapter_for(client_id)`` → the adapter a client is evaluated with.

============  ====================================================================
HyperLoRA     a hypernetwork generates each client's adapter; replies become a
              pFedHN gradient for the hypernetwork and the client's embedding
FedAvg-LoRA   one shared adapter; replies are averaged (weighted by examples)
local-only    each client's adapter is kept for it alone; nothing is shared
============  ====================================================================
"""

from __future__ import annotations

import logging
import math
import numbers
import reprlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from hyperfed.federation.config import FederationConfig
from hypernet import HyperLoRA, HypernetTrainer, TargetSpec, discover_targets, generator_class, validate_adapter
from hypernet.client_training import get_adapter
from hypernet.errors import MalformedUpdateError

__all__ = [
    "Reply",
    "RoundOutcome",
    "AdapterServer",
    "HyperLoRAServer",
    "FedAvgLoRAServer",
    "LocalOnlyServer",
    "fedavg",
    "screen_replies",
    "screen_reply",
    "MAX_NUM_EXAMPLES",
    "make_hyperlora_server",
    "make_fedavg_server",
    "make_local_server",
]

log = logging.getLogger(__name__)

Adapter = dict[str, torch.Tensor]


@dataclass
class Reply:
    """What a client returns after local training."""

    adapter: Mapping[str, torch.Tensor]
    num_examples: int
    train_loss: float = float("nan")


@dataclass
class RoundOutcome:
    """What a round did: what was sent to whom, who was accepted, who was rejected and why.

    ``sent`` holds the adapters the server sent this round (generated from the state
    before the round), which is what a recorder saves and hashes.
    """

    round: int
    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    update_norms: dict[str, float] = field(default_factory=dict)
    train_loss: float = float("nan")
    sent: dict[str, Adapter] = field(default_factory=dict, repr=False)


#: The most examples one reply may claim. Far above any client's round of local training,
#: and small enough that weights stay exact in float64 and every weighted sum is finite.
MAX_NUM_EXAMPLES = 2**31 - 1


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 160


def _shown(value: object) -> str:
    """A short description of a client-supplied value that cannot itself fail or flood the log."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an int of {value.bit_length()} bits"  # repr() refuses > 4300 digits
    try:
        return _REPR.repr(value)
    except Exception:  # a hostile __repr__
        return f"a {type(value).__name__}"


def _reason(exc: Exception) -> str:
    """The message of ``exc``, shortened, even if its ``__str__`` fails."""
    try:
        text = str(exc)
    except Exception:
        text = ""
    return text if len(text) <= 500 else text[:500] + "…"


def _num_examples(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 < value <= MAX_NUM_EXAMPLES:
        raise MalformedUpdateError(f"num_examples must be an int in 1..{MAX_NUM_EXAMPLES}, got {_shown(value)}")
    return int(value)


def _train_loss(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise MalformedUpdateError(f"train_loss must be a real number (NaN if unknown), got {_shown(value)}")
    try:
        loss = float(value)
    except OverflowError:
        raise MalformedUpdateError(f"train_loss {_shown(value)} is out of the float range") from None
    if math.isinf(loss):
        raise MalformedUpdateError(f"train_loss must be finite (or NaN if unknown), got {loss}")
    return loss


def screen_reply(spec: TargetSpec, sent: Mapping[str, torch.Tensor], reply: object, max_update_norm: float) -> Reply:
    """The reply as the server learns from it, or :class:`MalformedUpdateError` saying why not.

    Type and structure first, numbers last: ``reply`` is a :class:`Reply`; ``num_examples``
    an integer (not a bool) in ``1..MAX_NUM_EXAMPLES``; ``train_loss`` a real number, finite
    or NaN (= unknown; NaN losses are left out of the round's mean); the adapter passes
    :func:`hypernet.validate_adapter` against ``sent`` (keys, tensors, layout, dtype, shape,
    finite values, update norm). The returned reply holds plain ``int``/``float`` and fresh
    tensors in the sent adapter's dtype and device, never the client's objects.
    """
    if not isinstance(reply, Reply):
        raise MalformedUpdateError(f"expected a Reply, got {type(reply).__name__}")
    num_examples = _num_examples(reply.num_examples)
    train_loss = _train_loss(reply.train_loss)
    adapter = validate_adapter(spec, reply.adapter, sent, max_update_norm)
    return Reply(adapter, num_examples, train_loss)


def screen_replies(
    spec: TargetSpec,
    sent: Mapping[str, Mapping[str, torch.Tensor]],
    replies: Mapping[str, object],
    max_update_norm: float,
) -> tuple[dict[str, Reply], dict[str, str]]:
    """Split replies into accepted and rejected (``client → reason``); log every rejection.

    Total: every reply is either accepted (as :func:`screen_reply` returns it) or rejected
    with a reason. A check that fails in a way nobody foresaw rejects that reply (logged with
    its traceback); it never fails the round for the others.
    """
    accepted: dict[str, Reply] = {}
    rejected: dict[str, str] = {}
    for cid, reply in replies.items():
        try:
            if cid not in sent:
                raise MalformedUpdateError("no adapter was sent to this client this round")
            accepted[cid] = screen_reply(spec, sent[cid], reply, max_update_norm)
        except MalformedUpdateError as exc:
            rejected[cid] = _reason(exc)
            log.warning("rejected the reply of client %r: %s", cid, rejected[cid])
        except Exception as exc:  # the last resort: one bad reply never aborts the round
            rejected[cid] = f"the reply could not be screened ({type(exc).__name__}: {_reason(exc)})"
            log.warning("rejected the reply of client %r: %s", cid, rejected[cid], exc_info=True)
    return accepted, rejected


def fedavg(adapters: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]) -> Adapter:
    """Weighted average of adapters, key by key (FedAvg on LoRA A and B separately)."""
    total = float(sum(weights))
    if not adapters or total <= 0:
        raise MalformedUpdateError("fedavg needs at least one adapter and positive weights")
    return {
        key: sum(a[key].double() * (w / total) for a, w in zip(adapters, weights, strict=True)).to(
            adapters[0][key].dtype
        )
        for key in adapters[0]
    }


def _mean_loss(replies: Mapping[str, Reply]) -> float:
    """Mean of the known (non-NaN) train losses; NaN if none is known."""
    losses = [r.train_loss for r in replies.values() if not math.isnan(r.train_loss)]
    return sum(losses) / len(losses) if losses else float("nan")


class AdapterServer(ABC):
    """The server role of one method: all a Flower strategy or the plain loop needs.

    ``configure_round`` / ``aggregate_round`` run a round, ``adapters_for`` gives the
    adapters clients are evaluated with, ``published_adapter`` what a method shares with
    everyone (``None`` for personalised methods), ``register`` adds clients.
    """

    method: str

    def __init__(self, spec: TargetSpec, config: FederationConfig) -> None:
        self.spec = spec
        self.config = config
        self.sent: dict[str, Adapter] = {}

    @abstractmethod
    def adapter_for(self, client_id: str) -> Adapter:
        """The adapter ``client_id`` gets now (detached tensors)."""

    def register(self, client_ids: Sequence[str]) -> list[str]:
        """Make sure the server knows ``client_ids``; return the newly added ones."""
        return []

    def adapters_for(self, client_ids: Sequence[str]) -> dict[str, Adapter]:
        """The adapters ``client_ids`` get now (a method may batch this)."""
        return {cid: self.adapter_for(cid) for cid in client_ids}

    def published_adapter(self) -> Adapter | None:
        """The adapter the method shares with every client, if any (FedAvg's global one)."""
        return None

    def configure_round(self, round_: int, client_ids: Sequence[str]) -> dict[str, Adapter]:
        self.register(client_ids)
        self.sent = {cid: self.adapter_for(cid) for cid in client_ids}
        return self.sent

    def aggregate_round(self, round_: int, replies: Mapping[str, Reply]) -> RoundOutcome:
        accepted, rejected = screen_replies(self.spec, self.sent, replies, self.config.max_update_norm)
        outcome = RoundOutcome(
            round_, sorted(accepted), rejected, train_loss=_mean_loss(accepted), sent=dict(self.sent)
        )
        if accepted:
            outcome.update_norms = self._learn(accepted)
        return outcome

    @abstractmethod
    def _learn(self, accepted: Mapping[str, Reply]) -> dict[str, float]:
        """Update server state from accepted replies; return per-client update norms."""


class HyperLoRAServer(AdapterServer):
    """Generates a personalised adapter per client and trains the hypernetwork (pFedHN).

    The shared weights learn as ``config.shared_policy`` says: ``"shared"`` from every
    reply, ``"frozen"`` never (only embeddings and residuals move), ``"dp"`` from clipped
    per-client contributions plus Gaussian noise (:mod:`hyperfed.federation.privacy`; the
    noise comes from ``noise_generator``, by default seeded from the OS's secure randomness).
    A client registered later starts from ``initial_embedding`` if given (it must not depend
    on any client: e.g. the mean of public pseudo-clients' embeddings), else from its own
    seeded random vector.
    """

    method = "hyperlora"

    def __init__(
        self,
        hypernet: HyperLoRA,
        peft_model: nn.Module,
        config: FederationConfig,
        noise_generator: torch.Generator | None = None,
        initial_embedding: torch.Tensor | None = None,
    ) -> None:
        super().__init__(hypernet.spec, config)
        self.trainer = HypernetTrainer(hypernet, peft_model, config.server)
        self.noise_generator = noise_generator
        self.initial_embedding = None if initial_embedding is None else initial_embedding.detach().clone()

    @property
    def hypernet(self) -> HyperLoRA:
        return self.trainer.hypernet

    def register(self, client_ids: Sequence[str]) -> list[str]:
        new = [cid for cid in client_ids if cid not in self.hypernet.clients]
        for cid in new:
            self.trainer.add_client(cid, self.initial_embedding)
        return new

    @torch.no_grad()
    def adapter_for(self, client_id: str) -> Adapter:
        return {k: v.detach().clone() for k, v in self.hypernet.generate(client_id).items()}

    @torch.no_grad()
    def adapters_for(self, client_ids: Sequence[str]) -> dict[str, Adapter]:
        """Many clients' adapters with one batched generation."""
        return {
            cid: {k: v.detach().clone() for k, v in a.items()}
            for cid, a in self.hypernet.generate_many(client_ids).items()
        }

    def configure_round(self, round_: int, client_ids: Sequence[str]) -> dict[str, Adapter]:
        self.register(client_ids)
        self.sent = self.adapters_for(client_ids) if client_ids else {}
        return self.sent

    def _learn(self, accepted: Mapping[str, Reply]) -> dict[str, float]:
        returned = {cid: r.adapter for cid, r in accepted.items()}
        weights = {cid: float(r.num_examples) for cid, r in accepted.items()}
        sent = {cid: self.sent[cid] for cid in accepted}
        policy = self.config.shared_policy
        if policy == "dp":
            from hyperfed.federation.privacy import dp_shared_update, secret_generator

            if self.noise_generator is None:
                self.noise_generator = secret_generator()
            expected = self.config.sample_rate * len(self.hypernet.client_ids)
            return dp_shared_update(
                self.trainer,
                returned,
                sent,
                self.config.dp_clip,
                self.config.dp_noise_multiplier,
                expected,
                self.noise_generator,
                self.config.dp_scope,
            )
        return self.trainer.apply_client_updates(returned, sent, weights, update_shared=policy == "shared")


class FedAvgLoRAServer(AdapterServer):
    """One adapter shared by every client (the standard federated LoRA baseline)."""

    method = "fedavg"

    def __init__(self, initial: Mapping[str, torch.Tensor], spec: TargetSpec, config: FederationConfig) -> None:
        super().__init__(spec, config)
        self.global_adapter: Adapter = {k: v.detach().clone() for k, v in initial.items()}

    def adapter_for(self, client_id: str) -> Adapter:
        return {k: v.clone() for k, v in self.global_adapter.items()}

    def published_adapter(self) -> Adapter:
        return self.adapter_for("")

    def _learn(self, accepted: Mapping[str, Reply]) -> dict[str, float]:
        ids = sorted(accepted)
        self.global_adapter = fedavg([accepted[c].adapter for c in ids], [accepted[c].num_examples for c in ids])
        return {}


class LocalOnlyServer(AdapterServer):
    """Keeps each client's own adapter and hands it back next round; nothing is shared.

    (It plays the role of the client's disk, so local-only runs over the same protocol,
    sampling and budget as the federated methods.)
    """

    method = "local"

    def __init__(self, initial: Mapping[str, torch.Tensor], spec: TargetSpec, config: FederationConfig) -> None:
        super().__init__(spec, config)
        self.initial: Adapter = {k: v.detach().clone() for k, v in initial.items()}
        self.adapters: dict[str, Adapter] = {}

    def adapter_for(self, client_id: str) -> Adapter:
        return {k: v.clone() for k, v in self.adapters.get(client_id, self.initial).items()}

    def _learn(self, accepted: Mapping[str, Reply]) -> dict[str, float]:
        for cid, reply in accepted.items():
            self.adapters[cid] = {k: v.detach().clone() for k, v in reply.adapter.items()}
        return {}


def make_hyperlora_server(
    peft_model: nn.Module,
    config: FederationConfig,
    hypernet: HyperLoRA | None = None,
    initial_embedding: torch.Tensor | None = None,
) -> HyperLoRAServer:
    """A hypernetwork (``config.generator``, a tag of :data:`hypernet.GENERATORS`) on
    ``peft_model``'s LoRA targets, or around an existing ``hypernet``; new clients start
    from ``initial_embedding`` if given."""
    if hypernet is None:
        settings = {"seed": config.seed, "client_residual": config.client_residual}
        hypernet = generator_class(config.generator).from_peft_model(peft_model, settings)
    return HyperLoRAServer(hypernet, peft_model, config, initial_embedding=initial_embedding)


def make_fedavg_server(peft_model: nn.Module, config: FederationConfig) -> FedAvgLoRAServer:
    return FedAvgLoRAServer(get_adapter(peft_model), discover_targets(peft_model), config)


def make_local_server(peft_model: nn.Module, config: FederationConfig) -> LocalOnlyServer:
    return LocalOnlyServer(get_adapter(peft_model), discover_targets(peft_model), config)
