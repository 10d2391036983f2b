"""open_ledger / Ledger.from_url: which URL opens which backend."""

from __future__ import annotations

import json

import pytest

from hyperfed.errors import ConfigError
from hyperfed.ledger import EmbeddedLedger, Ledger, open_ledger


def test_plain_paths_and_sqlite_urls_open_the_embedded_ledger(tmp_path, monkeypatch):
    with open_ledger(tmp_path / "a.db") as a:
        assert isinstance(a, EmbeddedLedger) and a.path == tmp_path / "a.db"
    with open_ledger(f"sqlite://{tmp_path}/b.db") as b:
        assert b.path == tmp_path / "b.db"
    monkeypatch.chdir(tmp_path)
    with open_ledger("sqlite://sub/c.db") as c:
        assert c.path.resolve() == tmp_path / "sub" / "c.db"


def test_query_parameters_and_keywords_configure_the_backend(tmp_path):
    url = f"sqlite://{tmp_path}/d.db?writer_msp=Org1MSP&msp_id=Org1MSP"
    with open_ledger(url) as d:
        assert json.loads(d.evaluate("get_config"))["writer_msp"] == "Org1MSP"
    with open_ledger(url, msp_id="Org2MSP") as e:
        assert e.msp_id == "Org2MSP"


def test_bad_urls_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown ledger URL scheme"):
        open_ledger("ftp://example.org/ledger")
    with pytest.raises(ConfigError, match="names no file"):
        open_ledger("sqlite://")
    with pytest.raises(ConfigError, match="in the URL"):
        open_ledger("fabric+gateway://localhost:7051", msp_id="x")


def test_ledger_from_url_with_an_outbox(tmp_path):
    with Ledger.from_url(tmp_path / "l.db", outbox=tmp_path / "outbox.db") as ledger:
        assert ledger.register_client("a", "ab" * 32).committed
        assert ledger.flush().drained
        assert ledger.config().writer_msp == "HyperFedMSP"
