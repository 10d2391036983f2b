"""Every forget states its guarantee on the ledger; exact mode on a ``loop``-engine run.

The other forget tests record their runs with the Flower engine; these record with the plain
loop, under ``dp`` (a delete states (ε, δ) and ε for an observer who knows the client's
rounds) and ``shared`` (an exact forget states "exact" and equals retraining bit for bit).
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace

import pytest
import torch

from hyperfed.base_model import BaseModelConfig
from hyperfed.config import EvaluationConfig, RunConfig
from hyperfed.data.corpus import CorpusConfig
from hyperfed.experiment import run_experiment
from hyperfed.federation import FederationConfig, make_server, poisson_sample, run_rounds
from hyperfed.federation.privacy import client_level_epsilon
from hyperfed.ledger import Ledger
from hyperfed.rundir import RunDirectory
from hyperfed.rundir.fingerprints import embedding_bytes
from hyperfed.unlearning.forget import forget_client
from hyperfed.unlearning.replay import load_experiment
from hypernet import LocalTrainConfig
from hypernet.base_models import add_lora
from hypernet.io import read_meta

ROUNDS, RATE, SEED = 4, 0.6, 1
CONFIG = RunConfig(
    federation=FederationConfig(
        rounds=ROUNDS, sample_rate=RATE, local=LocalTrainConfig(steps=2, batch_size=2), lora_rank=2, seed=SEED
    ),
    corpus=CorpusConfig(domains=("code", "docs"), clients_per_domain=2, train_kib=1, val_kib=1, block_size=32),
    base_model=BaseModelConfig(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, steps=5, batch_size=2, block_size=32
    ),
    methods=("hyperlora",),
    evaluation=EvaluationConfig(every=ROUNDS),
    engine="loop",
)
DP = {"shared_policy": "dp", "client_residual": True, "dp_noise_multiplier": 1.5, "dp_clip": 0.1}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """``{policy: run folder}``: the same loop-engine run under ``shared`` and under ``dp``."""
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HYPERFED_CACHE", str(tmp_path_factory.mktemp("cache")))
        for policy, fields in (("shared", {}), ("dp", DP)):
            root = tmp_path_factory.mktemp(policy) / "run"
            run_experiment(root, replace(CONFIG, federation=replace(CONFIG.federation, **fields)))
            runs[policy] = root
        yield runs


def _copy(recorded, policy: str, tmp_path) -> RunDirectory:
    root = tmp_path / policy
    shutil.copytree(recorded[policy], root)
    return RunDirectory(root)


def _rounds_of(client_id: str, ids: list[str]) -> list[int]:
    return [r for r in range(1, ROUNDS + 1) if client_id in poisson_sample(SEED, r, ids, RATE)]


def _recorded_guarantee(rd: RunDirectory, client_id: str) -> dict:
    with Ledger.from_url(str(rd.ledger_path)) as ledger:
        (event,) = [e for e in ledger.forget_events() if e.client_id == client_id]
        return dict(event.guarantee)


def test_a_dp_delete_erases_the_residual_and_records_epsilon_for_an_observer_who_knows_the_rounds(recorded, tmp_path):
    rd = _copy(recorded, "dp", tmp_path)
    ids = read_meta(rd.checkpoint_dir(0))["client_ids"]
    victim = max(ids, key=lambda c: (len(_rounds_of(c, ids)), c))
    rounds = len(_rounds_of(victim, ids))
    assert rounds >= 1

    vectors = [  # every client-owned vector of the victim in every checkpoint: embedding and residual
        vector
        for r in rd.checkpoint_rounds()
        for vector in (rd.load_checkpoint(r).client_parameter(victim), rd.load_checkpoint(r).residual_parameter(victim))
    ]
    owned = [embedding_bytes(v) for v in vectors if torch.count_nonzero(v)]  # a zero residual is in any file
    assert len(owned) > len(rd.checkpoint_rounds())  # some residuals learned

    result = forget_client(rd.root, victim, "delete")

    blobs = [p.read_bytes() for p in rd.root.rglob("*") if p.is_file()]
    assert not any(vector in blob for vector in owned for blob in blobs)  # residual bytes gone too
    stated = _recorded_guarantee(rd, victim)
    assert stated == result.guarantee
    assert stated["policy"] == "dp" and stated["guarantee"] == "(ε, δ)-DP"
    assert stated["epsilon"] == pytest.approx(client_level_epsilon(1.5, RATE, ROUNDS, 1e-5))
    known = client_level_epsilon(1.5, 1.0, rounds, 1e-5)  # no amplification by sampling
    assert stated["epsilon_known_participation"] == pytest.approx(known)
    assert known > stated["epsilon"] and f"client's {rounds} rounds" in stated["text"]


def test_an_exact_forget_of_a_loop_run_equals_retraining_and_records_exact(recorded, tmp_path):
    rd = _copy(recorded, "shared", tmp_path)
    ids = read_meta(rd.checkpoint_dir(0))["client_ids"]
    victim = max(ids, key=lambda c: (_rounds_of(c, ids)[0], c))  # the latest joiner: a real rollback

    result = forget_client(rd.root, victim, "exact")

    first = _rounds_of(victim, ids)[0]
    assert result.replayed_rounds == list(range(first, ROUNDS + 1))
    config, corpus, base = load_experiment(rd)
    fed = replace(config.federation, method="hyperlora")
    model = add_lora(copy.deepcopy(base), rank=fed.lora_rank, seed=fed.seed)
    gold = make_server("hyperlora", model, fed)
    run_rounds(gold, model, {c: d for c, d in corpus.clients.items() if c != victim}, fed)
    gold_state, exact_state = gold.hypernet.state_dict(), rd.load_checkpoint(ROUNDS).state_dict()
    assert set(gold_state) == set(exact_state)
    assert all(torch.equal(gold_state[k], exact_state[k]) for k in gold_state)  # bit for bit
    stated = _recorded_guarantee(rd, victim)
    assert stated["guarantee"] == "exact" and stated["policy"] == "shared" and "replayed without it" in stated["text"]


def test_a_shared_delete_records_no_guarantee(recorded, tmp_path):
    rd = _copy(recorded, "shared", tmp_path)
    victim = read_meta(rd.checkpoint_dir(0))["client_ids"][0]
    forget_client(rd.root, victim, "delete")
    stated = _recorded_guarantee(rd, victim)
    assert (stated["guarantee"], stated["epsilon"]) == ("none", None) and "--mode exact" in stated["text"]


class Crash(Exception):
    pass


def test_a_ledger_step_resent_after_a_crash_is_a_replay_of_the_same_record(recorded, tmp_path, monkeypatch):
    # the crash lands after the ledger committed the forget but before the journal says so: the
    # retry sends the same arguments (the guarantee's floats included), so it is answered with
    # the committed record, not refused as a second forget
    from hyperfed.rundir.recorder import RunRecorder
    from hyperfed.unlearning.forget import recover_pending_forget

    rd = _copy(recorded, "dp", tmp_path)
    victim = read_meta(rd.checkpoint_dir(0))["client_ids"][0]
    real, receipts = RunRecorder.record_forget, []

    def commit_then_crash(self, *args, **kwargs):
        receipts.append(real(self, *args, **kwargs))
        if len(receipts) == 1:
            raise Crash("after the ledger committed")
        return receipts[-1]

    monkeypatch.setattr(RunRecorder, "record_forget", commit_then_crash)
    with pytest.raises(Crash):
        forget_client(rd.root, victim, "delete")
    result = recover_pending_forget(rd.root)
    assert result is not None and len(receipts) == 2
    # the same record either way: the outbox's idempotent delivery or the contract's replay answers it
    assert receipts[1].record == receipts[0].record and receipts[1].status == "committed"
    with Ledger.from_url(str(rd.ledger_path)) as ledger:
        assert [e.client_id for e in ledger.forget_events()] == [victim]
    assert _recorded_guarantee(rd, victim) == result.guarantee


def test_a_journal_from_before_the_participation_count_still_states_both_epsilons(recorded, tmp_path):
    import json

    from hyperfed.unlearning.forget import JOURNAL, recover_pending_forget

    rd = _copy(recorded, "dp", tmp_path)
    ids = read_meta(rd.checkpoint_dir(0))["client_ids"]
    victim = ids[1]

    def crash(step: str) -> None:
        if step == "model":
            raise Crash(step)

    with pytest.raises(Crash):
        forget_client(rd.root, victim, "delete", after_step=crash)
    journal = json.loads((rd.root / JOURNAL).read_text())
    del journal["participations"]  # as an older version wrote it
    (rd.root / JOURNAL).write_text(json.dumps(journal))
    result = recover_pending_forget(rd.root)
    assert result is not None
    known = client_level_epsilon(1.5, 1.0, len(_rounds_of(victim, ids)), 1e-5)
    assert result.guarantee["epsilon_known_participation"] == pytest.approx(known)
