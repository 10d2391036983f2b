"""Client-side logic, free of any Flower type: train the received adapter, evaluate it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from hyperfed.federation.config import FederationConfig, local_seed
from hyperfed.federation.servers import Adapter, Reply
from hypernet import ClientData, evaluate_loss, train_local_adapter

__all__ = ["local_round", "evaluate_client", "evaluate_splits", "Evaluation"]


@dataclass(frozen=True)
class Evaluation:
    """A client's losses (nats/byte) with one adapter: ``val`` (used for every choice),
    ``test`` (reported only; ``None`` without a test split) and the local fine-tuning steps
    chosen on ``val`` before both were measured (0 for methods that do not fine-tune)."""

    val: float
    test: float | None = None
    finetune_steps: int = 0


def local_round(
    peft_model: nn.Module,
    adapter: Adapter,
    data: ClientData,
    config: FederationConfig,
    round_: int,
    client_id: str,
) -> Reply:
    """Fine-tune ``adapter`` for ``config.local.steps`` steps on the client's train blocks."""
    trained, loss = train_local_adapter(peft_model, adapter, data.train, config.local_config(round_, client_id))
    return Reply(adapter=trained, num_examples=int(data.train.shape[0]), train_loss=loss)


def evaluate_client(peft_model: nn.Module, adapter: Adapter, data: ClientData) -> float:
    """Mean validation loss (nats/byte) of ``adapter`` on the client's held-out blocks."""
    return evaluate_loss(peft_model, adapter, data.val)


def _measure(peft_model: nn.Module, adapter: Adapter, data: ClientData, steps: int) -> Evaluation:
    test = None if data.test is None else evaluate_loss(peft_model, adapter, data.test)
    return Evaluation(evaluate_loss(peft_model, adapter, data.val), test, steps)


def evaluate_splits(
    peft_model: nn.Module,
    adapter: Adapter,
    data: ClientData,
    config: FederationConfig | None = None,
    round_: int = 0,
    client_id: str = "",
) -> Evaluation:
    """Validation and test loss of ``adapter``; for a method that fine-tunes at evaluation
    (``Method.finetune_steps``, e.g. ``fedavg_ft``) the adapter is first fine-tuned on the
    client's *train* blocks and the grid point with the lowest *validation* loss is kept.

    The grid is walked incrementally (``config.local`` settings, a fresh optimiser and a
    seed of its own per stretch), so the largest grid point costs its steps once. Test
    blocks are only measured, never used to choose.
    """
    grid = _finetune_grid(config)
    if config is None or not grid:
        return _measure(peft_model, adapter, data, 0)
    points: list[Evaluation] = []
    done = 0
    for steps in grid:
        if steps > done:
            seed = local_seed(config.seed, -(round_ + 1) * 1000 - done, client_id)  # apart from training rounds
            adapter, _ = train_local_adapter(
                peft_model, adapter, data.train, replace(config.local, steps=steps - done, seed=seed)
            )
            done = steps
        points.append(_measure(peft_model, adapter, data, steps))
    return min(points, key=lambda point: point.val)  # earliest grid point on a tie


def _finetune_grid(config: FederationConfig | None) -> tuple[int, ...]:
    if config is None:
        return ()
    from hyperfed.federation.methods import METHODS  # the registry imports the servers

    return tuple(sorted(set(METHODS[config.method].finetune_steps)))
