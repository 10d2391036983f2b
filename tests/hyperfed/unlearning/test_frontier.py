"""The utility ↔ unlearning frontier: points from report rows, and the PNG."""

from __future__ import annotations

import pytest

from hyperfed.unlearning.frontier import frontier_points, plot_frontier
from hypernet import ConfigError


def test_points_come_from_the_system_rows_only():
    rows = [
        {"name": "base model", "retained_loss": 1.6, "exposure_bits": 0.5},
        {"name": "before forget", "retained_loss": 1.5, "exposure_bits": 3.9},
        {"system": "after delete", "retained_loss": 1.5, "exposure_bits": 3.0},
        {"system": "retrain (gold)", "retained_loss": 1.51, "exposure_bits": 0.4},
        {"system": "attack on delete", "retained_loss": "", "exposure_bits": 3.0},  # not a system
        {"system": "after exact", "retained_loss": None, "exposure_bits": 0.4},  # no utility measured
    ]
    points = frontier_points(rows, prefix="shared ")
    assert [p["system"] for p in points] == ["shared base", "shared before", "shared delete", "shared gold"]
    assert points[2] == {"system": "shared delete", "retained_loss": 1.5, "exposure_bits": 3.0}


def test_plot_writes_a_png_and_refuses_no_points(tmp_path):
    path = plot_frontier([{"system": "gold", "retained_loss": 1.5, "exposure_bits": 0.4}], tmp_path / "f" / "x.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ConfigError):
        plot_frontier([], tmp_path / "y.png")
