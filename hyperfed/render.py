"""Terminal rendering for the CLI: tables and progress bars (library code never prints)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_table", "progress"]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, title: str | None = None) -> str:
    """A plain-text table with right-aligned numbers."""
    if not rows:
        return f"{title}\n(no rows)" if title else "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) for r in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric))

    out = [title] if title else []
    out += [line(columns), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def progress(total: int, desc: str):  # noqa: ANN201
    """A tqdm progress bar on stderr (disabled when stderr is not a terminal and CI is set)."""
    import os
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=bool(os.environ.get("CI")) and not sys.stderr.isatty())
