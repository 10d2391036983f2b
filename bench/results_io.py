"""What every benchmark script shares: a description of the machine and writing its JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["machine_info", "write_result"]


def machine_info(**extra: Any) -> dict[str, Any]:
    """Platform, Python, CPU count, torch version and threads (plus ``extra``)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    try:
        import torch

        info |= {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    except ImportError:
        pass
    return info | extra


def write_result(out: str | Path, result: dict[str, Any]) -> Path:
    """Write ``result`` as JSON to ``out`` (creating its folder) and say where."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"\nwrote {out}")
    return out
