"""The run's plots: learning curves and per-client test losses (``plots/loss_curves.png``).

:func:`plot_curves` draws them from an :class:`~hyperfed.experiment.ExperimentResult`;
:func:`redraw_plots` redraws a run's file from its ``metrics.json`` after a forget changed
it (its losses are traces too).
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from hyperfed.federation import method_label
from hypernet.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from hyperfed.experiment import ExperimentResult
    from hyperfed.rundir import RunDirectory

__all__ = ["LOSS_CURVES", "MAX_NAMED_CLIENTS", "plot_curves", "redraw_plots"]

LOSS_CURVES = "loss_curves.png"

#: Above this many clients the per-client panel shows points by client index, not named bars.
MAX_NAMED_CLIENTS = 24


def redraw_plots(rd: RunDirectory) -> None:
    """Redraw ``plots/loss_curves.png`` from ``metrics.json`` (after a forget changed it).

    Only a plot that exists is redrawn, and only from a :func:`run_experiment` metrics file.
    """
    path = rd.plots_dir / LOSS_CURVES
    metrics = rd.read_json(rd.metrics_path, default={})
    if not path.exists() or not isinstance(metrics.get("final"), dict) or not metrics.get("base"):
        return
    from hyperfed.experiment import ExperimentResult

    result = ExperimentResult.from_dict(metrics, rd.root)
    buffer = BytesIO()
    plot_curves(result, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def plot_curves(result: ExperimentResult, path: Path | BinaryIO) -> Path | BinaryIO:
    """Mean validation loss per round for each method (its selected round starred), with the
    base model as a line; and each client's test loss at the selected round per method (the
    final validation loss for a run without a test split), to a file path or a binary stream."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    fig = Figure(figsize=(12, 4.5))
    left, right = fig.subplots(1, 2)
    for method, curve in result.curves.items():
        if not curve:
            continue
        rounds, losses = zip(*curve, strict=True)
        (line,) = left.plot(rounds, losses, marker="o", label=method_label(method))
        chosen = result.selected_round(method)
        if chosen is not None:
            left.plot([chosen], [dict(curve)[chosen]], marker="*", ms=14, color=line.get_color())
    left.axhline(sum(result.base.values()) / len(result.base), color="grey", ls="--", label="base model")
    left.set(xlabel="round", ylabel="mean validation loss (nats/byte)", title="Learning curves (same budget)")
    left.legend()
    on_test = result.has_test()
    base = result.base_test if on_test else result.base
    shown = {m: result.test(m) for m in result.final} if on_test else result.final
    clients = list(base)
    xs = range(len(clients))
    if len(clients) > MAX_NAMED_CLIENTS:  # hundreds of named bars: unreadable, and seconds to lay out
        for method, losses in {"base": base, **shown}.items():
            label = "base" if method == "base" else method_label(method)
            right.plot(list(xs), [losses[c] for c in clients], ".", ms=3, label=label)
        right.set_xlabel(f"client (index of {len(clients)}, in metrics.json order)")
    else:
        width = 0.8 / (len(shown) + 1)
        right.bar([x - 0.4 + width / 2 for x in xs], [base[c] for c in clients], width, label="base", color="lightgrey")
        for i, (method, losses) in enumerate(shown.items(), start=1):
            right.bar(
                [x - 0.4 + width / 2 + i * width for x in xs],
                [losses[c] for c in clients],
                width,
                label=method_label(method),
            )
        right.set_xticks(list(xs), clients, rotation=45, ha="right", fontsize=7)
    if on_test:
        right.set(ylabel="test loss (nats/byte)", title="Per client, test loss at the selected round")
    else:
        right.set(ylabel="validation loss (nats/byte)", title="Per client, after training")
    lo = min(min(v.values()) for v in shown.values())
    right.set_ylim(bottom=lo - 0.2)
    right.legend(fontsize=7)
    fig.tight_layout()
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    return path
