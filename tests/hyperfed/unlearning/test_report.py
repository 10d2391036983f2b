"""forget_and_verify on a tiny recorded run with planted canaries."""

from __future__ import annotations

import json
import os

import pytest

from hyperfed.base_model import BaseModelConfig
from hyperfed.config import EvaluationConfig, RunConfig
from hyperfed.data.corpus import CorpusConfig
from hyperfed.experiment import run_experiment
from hyperfed.federation import FederationConfig
from hyperfed.rundir import client_file_name
from hyperfed.rundir.audit import audit_run
from hyperfed.unlearning.report import (
    VerificationRow,
    excess_removed,
    excess_removed_by_row,
    forget_and_verify,
    render_report,
    shared_guarantee,
)
from hypernet import LocalTrainConfig

VICTIM = "code/asyncio"
CONFIG = RunConfig(
    federation=FederationConfig(rounds=3, local=LocalTrainConfig(steps=3, batch_size=2), lora_rank=2),
    corpus=CorpusConfig(
        domains=("code", "docs"),
        clients_per_domain=2,
        train_kib=2,
        val_kib=1,
        block_size=64,
        canary_client=VICTIM,
        canary_count=2,
        canary_copies=4,
    ),
    base_model=BaseModelConfig(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, steps=5, batch_size=2, block_size=64
    ),
    methods=("hyperlora",),
    evaluation=EvaluationConfig(every=3),
)


def test_report_compares_modes_with_retraining_and_the_base_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPERFED_CACHE", str(tmp_path / "cache"))
    run_experiment(tmp_path / "run", CONFIG)
    report = forget_and_verify(
        tmp_path / "run", VICTIM, "delete", compare_modes=("exact",), num_candidates=50, attack_steps=5
    )

    names = [r.name for r in report.rows]
    assert names == [
        "base model",
        "before forget",
        "after delete",
        "after exact",
        "retrain (gold)",
        "attack on delete",
        "attack on exact",
        "attack on retrain",
        "strong attack on delete",
        "strong attack on exact",
        "strong attack on retrain",
    ]
    for row in report.rows:
        if "attack" in row.name:  # fitted on the held-out blocks: no membership score
            assert row.mia_auc is None
        else:
            assert row.mia_auc is not None and 0.0 <= row.mia_auc <= 1.0
        assert row.exposure_bits is not None and 0.0 <= row.exposure_bits <= report.exposure_ceiling_bits + 1e-9
    assert report.row("base model").mia_auc == 0.5  # calibrated by the base model itself: chance
    assert report.row("after delete").retained_loss is not None and report.row("after delete").seconds > 0
    assert set(report.speedup_vs_retrain) == {"delete", "exact"} and report.speedup_vs_retrain["delete"] > 0
    # exact mode reproduces retraining, so the two rows measure the same model
    assert report.row("after exact").retained_loss == pytest.approx(
        report.row("retrain (gold)").retained_loss, abs=1e-6
    )

    expected = {"after delete", "after exact", "attack on delete", "attack on exact"}
    assert set(report.excess_removed) == expected | {"strong attack on delete", "strong attack on exact"}
    bits = {r.name: r.exposure_bits for r in report.rows}
    got = report.excess_removed["after delete"]
    assert got == excess_removed(bits["before forget"], bits["after delete"], bits["retrain (gold)"])
    assert report.guarantee["policy"] == "shared" and report.guarantee["guarantee"] == "none"
    assert report.row("base model").retained_loss is not None  # the frontier's origin

    out = tmp_path / "run" / "forgets" / client_file_name(VICTIM)
    saved = json.loads((out / "report.json").read_text())
    assert saved["client_id"] == VICTIM and saved["guarantee"]["policy"] == "shared"
    assert saved["excess_removed"].keys() == report.excess_removed.keys()
    rendered = render_report(report)
    assert "excess removed" in rendered and "shared weights: 'shared'; guarantee: none" in rendered
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert "exposure" in render_report(report) and "the speed of retraining" in render_report(report)
    audit = audit_run(tmp_path / "run")
    assert audit.ok and VICTIM in audit.forgotten, [f for f in audit.findings if f.status not in ("match", "ok")]
    assert not [p for p in os.listdir(tmp_path) if p.startswith("hyperfed-compare")]


def test_excess_removed_is_the_fraction_and_na_without_an_excess():
    assert excess_removed(4.0, 3.0, 0.0) == pytest.approx(0.25)
    assert excess_removed(4.0, 0.0, 0.0) == 1.0 and excess_removed(4.0, 4.0, 0.0) == 0.0
    assert excess_removed(1.0, 0.5, 0.99) is None  # before − gold below epsilon: nothing to remove
    assert excess_removed(1.0, 0.5, 2.0) is None and excess_removed(float("nan"), 0.5, 0.0) is None


def test_excess_removed_by_row_pairs_each_attack_with_its_gold():
    def row(name: str, bits: float | None) -> VerificationRow:
        return VerificationRow(name, bits, 0.5, 1.0, None)

    rows = [
        row("base model", 1.0),
        row("before forget", 5.0),
        row("after delete", 4.0),
        row("retrain (gold)", 1.0),
        row("attack on delete", 4.5),
        row("attack on retrain", 2.0),
        row("strong attack on delete", 5.0),
        row("strong attack on retrain", 4.99),
    ]
    got = excess_removed_by_row(rows)
    assert got == {"after delete": 0.25, "attack on delete": pytest.approx(0.5 / 3), "strong attack on delete": None}
    assert excess_removed_by_row([row("before forget", None), row("after delete", None)]) == {}


def test_shared_guarantee_reads_the_policy_from_run_json():
    run_json = RunConfig().to_dict()
    run_json["federation"].pop("shared_policy", None)  # a run made before the policies: "shared"
    got = shared_guarantee(run_json, rounds=3)
    assert got["policy"] == "shared" and got["guarantee"] == "none" and got["text"]


def test_report_losses_are_nats_per_byte_for_any_tokenizer(tmp_path, monkeypatch):
    """The report converts token losses with the corpus's tokens-per-byte factors (a real
    model's tokenizer has ~0.3 tokens per byte; the byte tokenizer exactly 1)."""
    import dataclasses

    from hyperfed.base_model import load_or_build_base_model
    from hyperfed.data.corpus import build_corpus
    from hyperfed.unlearning.report import _Measure
    from hypernet import evaluate_loss
    from hypernet.base_models import add_lora

    monkeypatch.setenv("HYPERFED_CACHE", str(tmp_path / "cache"))
    model = add_lora(load_or_build_base_model(CONFIG.base_model), rank=2)
    corpus = build_corpus(CONFIG.corpus)
    factors = {cid: 0.25 * (i + 1) for i, cid in enumerate(corpus.clients)}
    scaled = dataclasses.replace(corpus, tokens_per_byte=factors)
    row = _Measure(model, scaled, CONFIG.corpus, VICTIM, 10).row("base model", None, None, retained_base=True)
    token_losses = {cid: evaluate_loss(model, None, d.val) for cid, d in corpus.clients.items()}
    assert row.forgotten_loss == pytest.approx(token_losses[VICTIM] * factors[VICTIM], rel=1e-6)
    others = [c for c in corpus.clients if c != VICTIM]
    expected = sum(token_losses[c] * factors[c] for c in others) / len(others)
    assert row.retained_loss == pytest.approx(expected, rel=1e-6)
