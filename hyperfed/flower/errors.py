"""Typed errors of the Flower layer.

All derive from :class:`hypernet.errors.HyperFedError`, so ``except HyperFedError`` catches
them together with the rest of the library.
"""

from __future__ import annotations

from hypernet.errors import HyperFedError, MalformedUpdateError

__all__ = ["MalformedReplyError", "ClientIdentityError", "FlowerRunError"]


class MalformedReplyError(MalformedUpdateError):
    """A client's reply message cannot be turned into an adapter update (missing record,
    undecodable array, missing metric); the strategy rejects it and the round goes on."""


class ClientIdentityError(HyperFedError):
    """A node cannot say which user client it is: set ``--node-config "client-id='…'"`` on
    the SuperNode, or run it in the Simulation Engine (``partition-id`` → corpus client)."""


class FlowerRunError(HyperFedError):
    """A Flower run (``flwr run`` on a SuperLink) failed, timed out or wrote no results;
    the message names the log file to read."""
