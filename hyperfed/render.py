"""Terminal rendering for the CLI: tables, progress bars and log lines (library code never
prints, and never configures logging: :func:`terminal_logging` is for entry points only)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # tqdm loads on first use
    from tqdm import tqdm

__all__ = ["format_table", "progress", "terminal_logging", "LOG_FORMAT"]

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

#: The loggers ``-v`` turns up to INFO; every other logger stays at WARNING.
VERBOSE_LOGGERS = ("hyperfed", "hypernet", "flwr")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3g}"
    return str(value)


def format_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, title: str | None = None
) -> str:
    """A plain-text table with right-aligned numbers."""
    if not rows:
        return f"{title}\n(no rows)" if title else "(no rows)"
    columns = list(columns or rows[0].keys())
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) for r in rows) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True))

    out = [title] if title else []
    out += [line(columns), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def progress(total: int, desc: str) -> tqdm:
    """A tqdm progress bar on stderr (disabled when stderr is not a terminal and CI is set)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=bool(os.environ.get("CI")) and not sys.stderr.isatty())


def _has_text(record: logging.LogRecord) -> bool:
    """Flower spaces out its own console with empty INFO lines; they say nothing here."""
    return bool(record.getMessage().strip())


@contextmanager
def terminal_logging(verbose: bool = False, flower: bool = False) -> Iterator[None]:
    """Log to stderr, each record once, through ``tqdm.write`` so a line never tears a bar.

    One handler on the root logger; WARNING and above by default, and with ``verbose``
    INFO for :data:`VERBOSE_LOGGERS`. Hugging Face's own progress bars (loading and writing
    weights of the tiny base model) are switched off, for the rest of the process.

    Flower installs a coloured console handler on its ``flwr`` logger when it is imported,
    and its records also propagate to the root logger, so under any root handler every
    Flower line printed twice. With ``flower`` (commands that run Flower), Flower's logger
    is imported now and its console handler taken off for the duration: its records come
    through our handler only, once, and INFO only with ``verbose``.

    Everything else changed is put back on exit, so the CLI's ``main`` can run several times in
    one process (tests) without stacking handlers.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers loads
    if "transformers.utils.logging" in sys.modules:  # already loaded (main() called in-process)
        sys.modules["transformers.utils.logging"].disable_progress_bar()
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    levels = {name: logging.getLogger(name).level for name in VERBOSE_LOGGERS}
    flower_logger, flower_handlers = logging.getLogger("flwr"), []
    if flower:
        from flwr.common.logger import ConsoleHandler  # importing it installs Flower's handler

        flower_handlers = [h for h in flower_logger.handlers if isinstance(h, ConsoleHandler)]
        for h in flower_handlers:
            flower_logger.removeHandler(h)
        flower_logger.addFilter(_has_text)
    for name in VERBOSE_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    root.addHandler(handler)
    try:
        with logging_redirect_tqdm(loggers=[root]):
            yield
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        flower_logger.removeFilter(_has_text)
        for h in flower_handlers:
            flower_logger.addHandler(h)
