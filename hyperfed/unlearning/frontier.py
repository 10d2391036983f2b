"""The utility ↔ unlearning frontier: remaining clients' loss against the forgotten client's exposure.

One point per system of a forget report (base model, before forget, after each mode, retrain
without the client): x is the remaining clients' mean held-out loss (lower = more useful), y
the forgotten client's canary exposure (lower = better forgotten). The ideal corner is the
bottom left; the gold standard marks what forgetting can reach at that utility.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hypernet.errors import ConfigError

__all__ = ["FRONTIER_SYSTEMS", "frontier_points", "plot_frontier", "draw_frontier"]

FRONTIER_SYSTEMS = {
    "base model": "base",
    "before forget": "before",
    "retrain (gold)": "gold",
}
"""Report row → point label; every ``after <mode>`` row becomes the point ``<mode>``."""


def frontier_points(rows: Iterable[Mapping[str, Any]], prefix: str = "") -> list[dict[str, Any]]:
    """The frontier's points from report rows (dicts with ``name`` or ``system``, ``retained_loss``,
    ``exposure_bits``); rows without both numbers are skipped. ``prefix`` tags each label (a policy)."""
    points = []
    for row in rows:
        name = str(row.get("name", row.get("system", "")))
        label = FRONTIER_SYSTEMS.get(name) or (name.removeprefix("after ") if name.startswith("after ") else None)
        x, y = row.get("retained_loss"), row.get("exposure_bits")
        if label is None or not isinstance(x, int | float) or not isinstance(y, int | float):
            continue
        points.append({"system": f"{prefix}{label}", "retained_loss": float(x), "exposure_bits": float(y)})
    return points


def plot_frontier(points: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Scatter the points (x: remaining clients' mean loss, y: exposure after forget) into a PNG."""
    if not points:
        raise ConfigError("plot_frontier needs at least one point (rows with retained_loss and exposure_bits)")
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    draw_frontier(ax, points)
    ax.set_title(title or "Utility ↔ unlearning frontier", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def draw_frontier(ax: Any, points: Sequence[Mapping[str, Any]]) -> None:
    """Draw the points on a matplotlib ``Axes`` (labelled, coloured by system)."""
    colors = {"base": "grey", "before": "tab:red", "gold": "tab:green"}
    labels: dict[tuple[float, float], list[str]] = {}  # coincident points (exact = gold) share one label
    for p in points:
        label = str(p["system"])
        color = colors.get(label.rsplit(" ", 1)[-1], "tab:blue")
        ax.scatter(p["retained_loss"], p["exposure_bits"], color=color, s=40, zorder=3)
        labels.setdefault((round(p["retained_loss"], 6), round(p["exposure_bits"], 6)), []).append(label)
    # neighbours closer than a label's width alternate above / below, so labels do not overprint
    xs, ys = [xy[0] for xy in labels], [xy[1] for xy in labels]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    placed: list[tuple[float, float]] = []
    for xy, names in sorted(labels.items()):
        crowded = sum(abs(xy[0] - x) < 0.1 * span_x and abs(xy[1] - y) < 0.05 * span_y for x, y in placed)
        placed.append(xy)
        offset = (4, 4 - 11 * (crowded % 2)) if crowded < 2 else (4, 4 + 11 * (crowded // 2))
        ax.annotate(" = ".join(names), xy, fontsize=8, xytext=offset, textcoords="offset points")
    ax.set_xlabel("remaining clients' mean held-out loss (nats/byte)", fontsize=8)
    ax.set_ylabel("forgotten client's canary exposure (bits)", fontsize=8)
    ax.grid(alpha=0.3)
