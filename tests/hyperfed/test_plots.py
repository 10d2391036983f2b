"""plots/loss_curves.png: named bars for a few clients, points by index for many."""

from io import BytesIO
from pathlib import Path

import pytest

from hyperfed.experiment import ExperimentResult
from hyperfed.plots import MAX_NAMED_CLIENTS, plot_curves


def _result(n: int) -> ExperimentResult:
    clients = [f"code/c{i:03d}" for i in range(n)]
    val = {c: 1.5 + i / 1000 for i, c in enumerate(clients)}
    curve = [(0, val), (2, {c: v - 0.05 for c, v in val.items()})]
    return ExperimentResult(
        final={"hyperlora": curve[-1][1], "local": curve[-1][1]},
        base=val,
        curves={},
        seconds={},
        domain_of={c: "code" for c in clients},
        run_dir=Path("."),
        curve_losses={"hyperlora": curve, "local": curve},
        test_curve_losses={"hyperlora": curve, "local": curve},
        base_test=val,
    )


@pytest.mark.parametrize("n", [3, MAX_NAMED_CLIENTS + 1])
def test_the_plot_is_a_png_with_each_client_named_only_while_they_fit(n, monkeypatch):
    from matplotlib.axes import Axes

    named: list[int] = []  # labels given to each set_xticks call
    original = Axes.set_xticks

    def spy(ax, ticks, labels=None, **kwargs):
        named.append(len(labels or []))
        return original(ax, ticks, labels, **kwargs)

    monkeypatch.setattr(Axes, "set_xticks", spy)
    buffer = BytesIO()
    plot_curves(_result(n), buffer)
    assert buffer.getvalue()[:4] == b"\x89PNG"
    assert named == ([n] if n <= MAX_NAMED_CLIENTS else [])
