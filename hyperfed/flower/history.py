"""What a Flower run did, per round and per client, in a JSON-ready form."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from hyperfed.federation import RoundOutcome

__all__ = ["FlowerHistory"]


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class FlowerHistory:
    """Everything the strategy saw, keyed by user client ids.

    Attributes
    ----------
    clients
        ``client id → Flower node id`` from the handshake.
    sampled
        ``round → clients sampled`` (Poisson sampling over the known ids).
    rounds
        One :class:`~hyperfed.federation.RoundOutcome` per round: accepted, rejected
        (with reasons), update norms, mean train loss.
    round_seconds
        ``round → wall time`` from sending the adapters to the server update.
    eval_losses
        ``round → client → validation loss`` (round 0: before training).
    test_losses
        ``round → client → test loss``, for the clients that have a test split.
    finetune_steps
        ``round → client → local steps chosen on validation`` before evaluating (fedavg_ft).
    """

    clients: dict[str, int] = field(default_factory=dict)
    sampled: dict[int, list[str]] = field(default_factory=dict)
    rounds: list[RoundOutcome] = field(default_factory=list)
    round_seconds: dict[int, float] = field(default_factory=dict)
    eval_losses: dict[int, dict[str, float]] = field(default_factory=dict)
    test_losses: dict[int, dict[str, float]] = field(default_factory=dict)
    finetune_steps: dict[int, dict[str, int]] = field(default_factory=dict)

    def mean_eval_loss(self, round_: int) -> float:
        """Mean over clients of the validation loss evaluated after ``round_``."""
        losses = self.eval_losses[round_]
        return sum(losses.values()) / len(losses)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (string keys, NaN → ``None``)."""
        rounds = []
        for outcome in self.rounds:
            row = asdict(outcome)
            row["train_loss"] = _finite_or_none(outcome.train_loss)
            row["seconds"] = self.round_seconds.get(outcome.round)
            rounds.append(row)
        return {
            "clients": dict(self.clients),
            "sampled": {str(r): ids for r, ids in self.sampled.items()},
            "rounds": rounds,
            "eval_losses": {
                str(r): {c: _finite_or_none(v) for c, v in losses.items()} for r, losses in self.eval_losses.items()
            },
            "test_losses": {
                str(r): {c: _finite_or_none(v) for c, v in losses.items()} for r, losses in self.test_losses.items()
            },
            "finetune_steps": {str(r): dict(steps) for r, steps in self.finetune_steps.items()},
        }
