"""Fixtures of the ledger tests, and the list of backends the conformance suite runs on.

A backend factory takes pytest's ``tmp_path`` and returns a fresh, initialised
:class:`~hyperfed.ledger.base.LedgerBackend` whose identity is the writer MSP (``WRITER``).
It may instead be a generator function that yields the backend and cleans up after.
The fixture closes the backend after each test.
"""

from __future__ import annotations

import hashlib
import inspect

import pytest

from hyperfed.ledger import EmbeddedLedger

WRITER = "HyperFedMSP"


def digest(text: str) -> str:
    """A deterministic sha256 hex for test data."""
    return hashlib.sha256(text.encode()).hexdigest()


def embedded_backend(tmp_path):
    return EmbeddedLedger(tmp_path / "ledger.db", writer_msp=WRITER, msp_id=WRITER)


def local_gateway_backend(tmp_path):
    # The Fabric Gateway client against a signature-checking gateway on loopback that
    # runs the contract on an embedded ledger; closing the backend stops the endpoint.
    from hyperfed.ledger.devnet import connect_local_gateway

    return connect_local_gateway(tmp_path / "ledger.db", msp_id=WRITER)


# ---- Backends under the conformance suite: one line per backend. ------------------
BACKEND_FACTORIES = [
    pytest.param(embedded_backend, id="embedded"),
    pytest.param(local_gateway_backend, id="local-gateway"),
]
# -----------------------------------------------------------------------------------


@pytest.fixture(params=BACKEND_FACTORIES)
def backend(request, tmp_path):
    factory = request.param
    if inspect.isgeneratorfunction(factory):
        gen = factory(tmp_path)
        made = next(gen)
        yield made
        made.close()
        next(gen, None)
    else:
        made = factory(tmp_path)
        yield made
        made.close()


@pytest.fixture
def ledger_path(tmp_path):
    return tmp_path / "ledger.db"


@pytest.fixture
def embedded(ledger_path):
    led = EmbeddedLedger(ledger_path, writer_msp=WRITER, msp_id=WRITER)
    yield led
    led.close()
