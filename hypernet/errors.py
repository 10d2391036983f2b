"""Typed errors shared by the whole library.

``hypernet`` is the lower layer, so the root of the hierarchy lives here and ``hyperfed``
re-exports and extends it. Each class means one thing; messages say what to do.
"""

from __future__ import annotations

__all__ = [
    "HyperFedError",
    "ConfigError",
    "UnknownClientError",
    "DuplicateClientError",
    "NoLoraTargetsError",
    "CheckpointMismatchError",
    "CorruptFileError",
    "MalformedUpdateError",
]


class HyperFedError(Exception):
    """Root of every error raised on purpose by hypernet and hyperfed."""


class ConfigError(HyperFedError, ValueError):
    """A configuration field has an invalid value."""


class UnknownClientError(HyperFedError, KeyError):
    """The client id is not registered (or was removed)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "unknown client"


class DuplicateClientError(HyperFedError, ValueError):
    """The client id is already registered."""


class NoLoraTargetsError(HyperFedError, ValueError):
    """The model has no LoRA layers to generate adapters for."""


class CheckpointMismatchError(HyperFedError, ValueError):
    """A checkpoint or adapter does not fit the model or hypernetwork it is loaded into."""


class CorruptFileError(HyperFedError, ValueError):
    """A file on disk is unreadable, truncated or fails its integrity check."""


class MalformedUpdateError(HyperFedError, ValueError):
    """A returned adapter has wrong keys or shapes, NaN/inf values or an oversized update."""
