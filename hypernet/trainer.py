"""HypernetTrainer: trains a HyperLoRA, end to end or from clients' returned adapters.

Two modes share one optimizer setup:

* **end to end** (:meth:`HypernetTrainer.fit`): per step, sample clients, generate their
  adapters, run the model functionally on each client's batch and backpropagate the mean
  loss into the hypernetwork (needs the data in one place: simulation, notebooks).
* **pFedHN** (:meth:`HypernetTrainer.apply_client_updates`): clients trained locally and
  returned adapters; :func:`hypernet.pfedhn.pfedhn_backward` turns them into gradients.

Shared weights (φ) and client embeddings have separate optimizers, and every client
embedding is its own parameter, so :meth:`remove_client` deletes a client's embedding
*and* its optimizer state completely.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from hypernet.data import ClientData, sample_batch
from hypernet.errors import ConfigError
from hypernet.functional import causal_lm_loss
from hypernet.hyperlora import HyperLoRA
from hypernet.client_training import evaluate_loss
from hypernet.pfedhn import pfedhn_backward

__all__ = ["TrainerConfig", "HypernetTrainer"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerConfig:
    """Optimisation of the hypernetwork.

    Attributes
    ----------
    lr: learning rate of the shared weights (Adam 1e-3 worked end to end; 3e-3 diverged).
    embedding_lr: learning rate of client embeddings (default: ``lr``).
    optimizer: ``"adam"`` or ``"sgd"`` (pFedHN used SGD 1e-2, momentum 0.9).
    momentum: SGD momentum.
    base_lr: if set, the per-target *base adapters* get their own plain SGD step with this
        learning rate instead of joining the shared optimizer. With ``base_lr=1`` and the
        pFedHN rule, the base moves by the clients' mean update — exactly a FedAvg step — and
        the rest of the hypernetwork learns each client's deviation from it.
    grad_clip: max global grad norm of the shared weights per step (``None``: off).
    batch_size: blocks per client per end-to-end step.
    clients_per_step: clients sampled per end-to-end step.
    seed: seeds client and batch sampling.
    """

    lr: float = 1e-3
    embedding_lr: float | None = None
    optimizer: str = "adam"
    momentum: float = 0.9
    base_lr: float | None = None
    grad_clip: float | None = 50.0
    batch_size: int = 8
    clients_per_step: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"TrainerConfig.optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        for name in ("lr", "batch_size", "clients_per_step"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"TrainerConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("embedding_lr", "base_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"TrainerConfig.{name} must be > 0 or None, got {value!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(f"TrainerConfig.grad_clip must be > 0 or None, got {self.grad_clip!r}")


class HypernetTrainer:
    """Train ``hypernet`` to produce good adapters for ``peft_model``'s clients.

    Parameters
    ----------
    hypernet:
        The generator; its clients are the ones that can be trained.
    peft_model:
        The peft-wrapped base model the adapters are for (its base weights stay frozen).
    config:
        Optimisation settings.
    """

    def __init__(self, hypernet: HyperLoRA, peft_model: nn.Module, config: TrainerConfig | None = None) -> None:
        self.hypernet = hypernet
        self.model = peft_model
        self.config = cfg = config or TrainerConfig()
        for p in peft_model.parameters():
            p.requires_grad_(False)  # functional_call supplies the LoRA weights
        base = hypernet.base_parameters() if cfg.base_lr is not None else []
        rest = [p for p in hypernet.shared_parameters() if all(p is not b for b in base)]
        self.shared_optimizer = self._make_optimizer(rest, cfg.lr)
        self.base_optimizer = torch.optim.SGD([{"params": base}], lr=cfg.base_lr or 0.0) if base else None
        self.client_optimizer = self._make_optimizer(list(hypernet.clients.parameters()), cfg.embedding_lr or cfg.lr)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step_count = 0

    def _make_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        groups = [{"params": params}]  # one explicit group, so it may start empty (no clients yet)
        if self.config.optimizer == "adam":
            return torch.optim.Adam(groups, lr=lr)
        return torch.optim.SGD(groups, lr=lr, momentum=self.config.momentum)

    # ----------------------------------------------------------------- clients
    def add_client(self, client_id: str, embedding: torch.Tensor | None = None) -> None:
        """Register a client in the hypernetwork and its optimizer."""
        param = self.hypernet.add_client(client_id, embedding)
        self.client_optimizer.param_groups[0]["params"].append(param)

    def remove_client(self, client_id: str) -> torch.Tensor:
        """Delete a client's embedding and its optimizer state; return the removed embedding."""
        param = self.hypernet.clients.parameter(client_id)
        group = self.client_optimizer.param_groups[0]
        group["params"] = [p for p in group["params"] if p is not param]
        self.client_optimizer.state.pop(param, None)
        removed = self.hypernet.remove_client(client_id)
        param.grad = None
        param.data = torch.empty(0)  # drop our last reference to the values
        return removed

    def client_optimizer_state(self, client_id: str) -> dict[str, torch.Tensor]:
        """The optimizer's tensors for one client (empty before its first step)."""
        param = self.hypernet.clients.parameter(client_id)
        return {k: v for k, v in self.client_optimizer.state.get(param, {}).items() if isinstance(v, torch.Tensor)}

    # ----------------------------------------------------------- end to end
    def train_step(self, data: Mapping[str, ClientData], client_ids: Sequence[str]) -> float:
        """One optimizer step on a batch from each of ``client_ids``; returns the mean loss."""
        self.model.train()
        device = next(self.hypernet.parameters()).device
        adapters = self.hypernet.generate_batch(list(client_ids))  # key → (b, ...)
        losses = []
        for n, cid in enumerate(client_ids):
            batch = sample_batch(data[cid].train, self.config.batch_size, self.generator).to(device)
            adapter = {k: v[n] for k, v in adapters.items()}
            losses.append(causal_lm_loss(self.model, adapter, batch))
        loss = torch.stack(losses).mean()
        self._zero_grad()
        loss.backward()
        self._step()
        return loss.item()

    def fit(
        self,
        data: Mapping[str, ClientData],
        steps: int,
        eval_every: int | None = None,
        callback: Callable[[int, dict[str, float]], None] | None = None,
    ) -> list[dict[str, float]]:
        """Train end to end for ``steps`` steps on every client in ``data``.

        Returns a history: one row per step (``step``, ``loss``), plus ``val_loss`` (mean over
        clients) on steps where it was evaluated. ``callback(step, row)`` lets a caller draw
        progress (the library itself only logs).
        """
        ids = [cid for cid in data if cid in self.hypernet.clients]
        if not ids:
            raise ConfigError("none of the data's clients is registered in the hypernetwork")
        k = min(self.config.clients_per_step, len(ids))
        history = []
        for _ in range(steps):
            pick = torch.randperm(len(ids), generator=self.generator)[:k].tolist()
            row: dict[str, float] = {"step": self.step_count + 1, "loss": self.train_step(data, [ids[i] for i in pick])}
            if eval_every and (self.step_count % eval_every == 0 or self.step_count == steps):
                per_client = self.evaluate(data)
                row["val_loss"] = sum(per_client.values()) / len(per_client)
                log.info("step %d: train %.4f val %.4f", self.step_count, row["loss"], row["val_loss"])
            history.append(row)
            if callback:
                callback(self.step_count, row)
        return history

    @torch.no_grad()
    def evaluate(self, data: Mapping[str, ClientData], client_ids: Sequence[str] | None = None) -> dict[str, float]:
        """Validation loss of each client's own generated adapter."""
        ids = list(client_ids) if client_ids is not None else [c for c in data if c in self.hypernet.clients]
        adapters = self.hypernet.generate(ids) if ids else {}
        return {cid: evaluate_loss(self.model, adapters[cid], data[cid].val) for cid in ids}

    # ---------------------------------------------------------------- pFedHN
    def apply_client_updates(
        self,
        returned: Mapping[str, Mapping[str, torch.Tensor]],
        sent: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """One pFedHN step from clients' returned adapters; returns per-client update norms."""
        self._zero_grad()
        norms = pfedhn_backward(self.hypernet, returned, sent, weights)
        self._step()
        return norms

    # ---------------------------------------------------------------- shared
    def _zero_grad(self) -> None:
        if self.base_optimizer is not None:
            self.base_optimizer.zero_grad(set_to_none=True)
        self.shared_optimizer.zero_grad(set_to_none=True)
        self.client_optimizer.zero_grad(set_to_none=True)

    def _step(self) -> None:
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.shared_optimizer.param_groups[0]["params"], self.config.grad_clip)
        if self.base_optimizer is not None:
            self.base_optimizer.step()
        self.shared_optimizer.step()
        self.client_optimizer.step()  # params without .grad (unsampled clients) are skipped
        self.step_count += 1

    def config_dict(self) -> dict:
        return asdict(self.config)
