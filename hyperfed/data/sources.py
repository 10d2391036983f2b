"""Text that exists on every machine with Python, so corpora build offline.

* ``stdlib_family_text("asyncio")``: the sources of one standard-library package
  (code, comments, docstrings) — one *family* per client.
* ``pydoc_topics_text(...)``: English prose of Python's own reference documentation
  (``pydoc_data.topics``), grouped into slices.
* ``license_text("GPL-3")``: a licence from ``/usr/share/common-licenses`` (Debian systems).

Files are read in sorted order so the same text comes out on every machine with the same
Python version.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from hypernet.errors import ConfigError

__all__ = ["stdlib_root", "stdlib_family_text", "pydoc_topics_text", "license_text", "LICENSES_DIR"]

LICENSES_DIR = Path("/usr/share/common-licenses")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_family_text(family: str, max_bytes: int | None = None) -> str:
    """Concatenated ``*.py`` sources of the standard-library package ``family``."""
    root = stdlib_root() / family
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root.with_suffix(".py")]
    files = [f for f in files if f.is_file() and "test" not in f.relative_to(stdlib_root()).parts[1:]]
    if not files:
        raise ConfigError(f"no standard-library sources for family {family!r} under {stdlib_root()}")
    parts, size = [], 0
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if max_bytes is not None and size >= max_bytes:
            break
    text = "\n".join(parts)
    return text[:max_bytes] if max_bytes is not None else text


def pydoc_topics_text(start: int = 0, stop: int | None = None) -> str:
    """Topics ``[start:stop]`` (in sorted order) of Python's reference documentation.

    Some topics repeat whole sections of others (``compound`` contains ``while``...);
    each paragraph is kept only at its first occurrence across *all* topics, so no two
    slices of the docs share text.
    """
    from pydoc_data.topics import topics

    seen: set[str] = set()
    chosen = set(sorted(topics)[start:stop])
    out = []
    for key in sorted(topics):
        for paragraph in topics[key].split("\n\n"):
            if paragraph.strip() and paragraph not in seen:
                seen.add(paragraph)
                if key in chosen:
                    out.append(paragraph)
    return "\n\n".join(out)


def license_text(name: str) -> str:
    """A licence text from ``/usr/share/common-licenses``."""
    path = LICENSES_DIR / name
    if not path.is_file():
        raise ConfigError(f"licence {name!r} not found in {LICENSES_DIR}")
    return path.read_text(encoding="utf-8", errors="replace")
