"""HypernetTrainer: trains a HyperLoRA, end to end or from clients' returned adapters.

Two modes share one optimizer setup:

* **end to end** (:meth:`HypernetTrainer.fit`): per step, sample clients, generate their
  adapters, run the model functionally on each client's batch and backpropagate the mean
  loss into the hypernetwork (needs the data in one place: simulation, notebooks).
* **pFedHN** (:meth:`HypernetTrainer.apply_client_updates`): clients trained locally and
  returned adapters; :func:`hypernet.pfedhn.pfedhn_backward` turns them into gradients.

Shared weights (φ) and client embeddings have separate optimizers, and every client
embedding is its own parameter, so :meth:`remove_client` deletes a client's embedding
*and* its optimizer state completely. :meth:`HypernetTrainer.state_dict` gives the whole
training state as flat named tensors (layout in :mod:`hypernet.trainer_state`), so nothing
outside this package reaches into the optimizers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from hypernet import trainer_state
from hypernet.client_training import evaluate_loss
from hypernet.config import TrainerConfig
from hypernet.data import ClientData, sample_batch
from hypernet.errors import ConfigError
from hypernet.functional import causal_lm_loss
from hypernet.generators import Generator
from hypernet.pfedhn import pfedhn_backward

__all__ = ["HypernetTrainer"]

log = logging.getLogger(__name__)


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

    def __init__(self, hypernet: Generator, peft_model: nn.Module, config: TrainerConfig | None = None) -> None:
        self.hypernet = hypernet
        self.model = peft_model
        self.config = cfg = config or TrainerConfig()
        for p in peft_model.parameters():
            p.requires_grad_(False)  # functional_call supplies the LoRA weights
        base = hypernet.base_parameters() if cfg.base_lr is not None else []
        rest = [p for p in hypernet.shared_parameters() if all(p is not b for b in base)]
        self.shared_optimizer = self._make_optimizer(rest, cfg.lr)
        self.base_optimizer = torch.optim.SGD([{"params": base}], lr=cfg.base_lr or 0.0) if base else None
        self.client_optimizer = self._make_optimizer(hypernet.client_parameters(), cfg.embedding_lr or cfg.lr)
        # Client-owned residual adapters: plain SGD without momentum, so it holds no state
        # (nothing of a client's residual is kept outside the residual itself).
        self.residual_optimizer = torch.optim.SGD([{"params": hypernet.residual_parameters()}], lr=cfg.residual_lr)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.step_count = 0

    def _make_optimizer(self, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        groups: list[dict[str, Any]] = [{"params": params}]  # one explicit group: may start empty (no clients)
        if self.config.optimizer == "adam":
            return torch.optim.Adam(groups, lr=lr)
        return torch.optim.SGD(groups, lr=lr, momentum=self.config.momentum)

    # ----------------------------------------------------------------- clients
    def add_client(self, client_id: str, embedding: torch.Tensor | None = None) -> None:
        """Register a client in the hypernetwork and its optimizer."""
        param = self.hypernet.add_client(client_id, embedding)
        self.client_optimizer.param_groups[0]["params"].append(param)
        residual = self.hypernet.residual_parameter(client_id)
        if residual is not None:
            self.residual_optimizer.param_groups[0]["params"].append(residual)

    def remove_client(self, client_id: str) -> torch.Tensor:
        """Delete a client's embedding, its residual and their optimizer state; return the
        removed embedding."""
        param = self.hypernet.client_parameter(client_id)
        residual = self.hypernet.residual_parameter(client_id)
        owned = [(param, self.client_optimizer)] + (
            [(residual, self.residual_optimizer)] if residual is not None else []
        )
        for p_owned, optimizer in owned:
            group = optimizer.param_groups[0]
            group["params"] = [p for p in group["params"] if p is not p_owned]
            optimizer.state.pop(p_owned, None)
        removed = self.hypernet.remove_client(client_id)
        for p_owned, _ in owned:
            p_owned.grad = None
            p_owned.data = torch.empty(0)  # drop our last reference to the values
        return removed

    def client_optimizer_state(self, client_id: str) -> dict[str, torch.Tensor]:
        """The optimizer's tensors for one client (empty before its first step)."""
        param = self.hypernet.client_parameter(client_id)
        return {k: v for k, v in self.client_optimizer.state.get(param, {}).items() if isinstance(v, torch.Tensor)}

    # ----------------------------------------------------------- end to end
    def train_step(self, data: Mapping[str, ClientData], client_ids: Sequence[str]) -> float:
        """One optimizer step on a batch from each of ``client_ids``; returns the mean loss."""
        self.model.train()
        device = next(self.hypernet.parameters()).device
        adapters = self.hypernet.generate_batch(list(client_ids))  # key → (b, ...)
        losses: list[torch.Tensor] = []
        for n, cid in enumerate(client_ids):
            batch = sample_batch(data[cid].train, self.config.batch_size, self.generator).to(device)
            adapter = {k: v[n] for k, v in adapters.items()}
            losses.append(causal_lm_loss(self.model, adapter, batch))
        loss = torch.stack(losses).mean()
        self._zero_grad()
        torch.autograd.backward(loss)
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
        ids = [cid for cid in data if self.hypernet.has_client(cid)]
        if not ids:
            raise ConfigError("none of the data's clients is registered in the hypernetwork")
        k = min(self.config.clients_per_step, len(ids))
        history: list[dict[str, float]] = []
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
        ids = list(client_ids) if client_ids is not None else [c for c in data if self.hypernet.has_client(c)]
        adapters = self.hypernet.generate_many(ids)
        return {cid: evaluate_loss(self.model, adapters[cid], data[cid].val) for cid in ids}

    # ---------------------------------------------------------------- pFedHN
    def apply_client_updates(
        self,
        returned: Mapping[str, Mapping[str, torch.Tensor]],
        sent: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        weights: Mapping[str, float] | None = None,
        update_shared: bool = True,
    ) -> dict[str, float]:
        """One pFedHN step from clients' returned adapters; returns per-client update norms.

        With ``update_shared=False`` only client-owned state (embeddings, residuals) moves:
        the shared weights get no gradient and their optimizers do not step (the ``frozen``
        policy). A client's residual steps on its own ``θ − θ̃``, unweighted by the others.
        """
        self._zero_grad()
        norms = pfedhn_backward(self.hypernet, returned, sent, weights)
        self._unweight_client_state(returned, weights, embeddings=not update_shared)
        if not update_shared:
            for p in self.hypernet.shared_parameters():
                p.grad = None
        self._step()
        return norms

    def step_from_gradients(self) -> None:
        """Step every optimizer on the ``.grad`` a caller has set (e.g. a privatised shared
        gradient, :mod:`hyperfed.federation.privacy`); clears the gradients first and after."""
        self._step()
        self._zero_grad()

    def zero_grad(self) -> None:
        """Clear every gradient of the generator."""
        self._zero_grad()

    def _unweight_client_state(
        self, returned: Mapping[str, Mapping[str, torch.Tensor]], weights: Mapping[str, float] | None, embeddings: bool
    ) -> None:
        """pFedHN scales client i's direction by its weight wᵢ/Σw; a residual (and, with
        ``embeddings``, the embedding) is the client's alone, so its gradient is rescaled to
        the client's own direction ``θ − θ̃``: with frozen shared weights a client's state
        then does not depend on who else took part (delete equals retraining bit for bit)."""
        ids = list(returned)
        raw = {cid: float(weights[cid]) if weights else 1.0 for cid in ids}
        total = sum(raw.values())
        for cid in ids:
            owned = [self.hypernet.residual_parameter(cid)]
            owned += [self.hypernet.client_parameter(cid)] if embeddings else []
            for param in owned:
                if param is not None and param.grad is not None and raw[cid] > 0:
                    param.grad.mul_(total / raw[cid])

    # ---------------------------------------------------------------- shared
    def _zero_grad(self) -> None:
        if self.base_optimizer is not None:
            self.base_optimizer.zero_grad(set_to_none=True)
        self.shared_optimizer.zero_grad(set_to_none=True)
        self.client_optimizer.zero_grad(set_to_none=True)
        self.residual_optimizer.zero_grad(set_to_none=True)

    def _step(self) -> None:
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.shared_optimizer.param_groups[0]["params"], self.config.grad_clip)
        if self.base_optimizer is not None:
            self.base_optimizer.step()
        self.shared_optimizer.step()
        self.client_optimizer.step()  # params without .grad (unsampled clients) are skipped
        self.residual_optimizer.step()
        self.step_count += 1

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    # ----------------------------------------------------------------- state
    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = {"shared": self.shared_optimizer, "client": self.client_optimizer}
        if self.base_optimizer is not None:
            optimizers["base"] = self.base_optimizer
        return optimizers

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The training state as flat named CPU tensors: every optimizer's state, the step
        count and the sampling RNG (key layout in :mod:`hypernet.trainer_state`).

        The generator's own weights are not included (save them with
        :func:`hypernet.save_hypernet`). Client entries are keyed ``client/<client id>/...``;
        drop one client's with :meth:`remove_client_state`.
        """
        names = {id(p): n for n, p in self.hypernet.named_parameters()}
        client_of = {id(self.hypernet.client_parameter(c)): c for c in self.hypernet.client_ids}
        state = trainer_state.optimizer_state_tensors(self._optimizers(), names, client_of)
        state[trainer_state.STEP_COUNT_KEY] = torch.tensor(self.step_count, dtype=torch.int64)
        state[trainer_state.SAMPLER_STATE_KEY] = self.generator.get_state()
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore a :meth:`state_dict` into this trainer (built on the same generator).

        Entries of clients the generator no longer holds are ignored, so a forgotten
        client's state is never restored. A state without the ``trainer/`` entries (an
        optimizer-only file) leaves the step count and the sampling RNG as they are.

        Raises
        ------
        CorruptFileError
            An entry names a parameter the generator does not have.
        CheckpointMismatchError
            An entry's shape differs from its parameter's.
        """
        clients = {c: self.hypernet.client_parameter(c) for c in self.hypernet.client_ids}
        optimizers: dict[str, torch.optim.Optimizer | None] = {**self._optimizers()}
        trainer_state.load_optimizer_state(optimizers, dict(self.hypernet.named_parameters()), clients, state)
        if trainer_state.STEP_COUNT_KEY in state:
            self.step_count = int(state[trainer_state.STEP_COUNT_KEY])
        if trainer_state.SAMPLER_STATE_KEY in state:
            self.generator.set_state(state[trainer_state.SAMPLER_STATE_KEY].clone())

    @staticmethod
    def remove_client_state(state: Mapping[str, torch.Tensor], client_id: str) -> dict[str, torch.Tensor]:
        """``state`` (from :meth:`state_dict` or a file) without ``client_id``'s entries."""
        return trainer_state.remove_client_state(state, client_id)

    @staticmethod
    def clients_in_state(keys: Iterable[str]) -> set[str]:
        """Client ids with entries among ``keys`` of a :meth:`state_dict`."""
        return trainer_state.clients_in_state(keys)
