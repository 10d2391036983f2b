"""Public pretraining: shared weights learn from pseudo-clients, which then leave no trace."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from hyperfed.base_model import BaseModelConfig, load_or_build_base_model
from hyperfed.config import EvaluationConfig, RunConfig
from hyperfed.data.corpus import DOMAINS, PUBLIC_PREFIX, CorpusConfig, build_corpus, public_clients
from hyperfed.experiment import run_experiment
from hyperfed.federation import FederationConfig, make_server, run_rounds
from hyperfed.federation import public_pretrain as pp
from hyperfed.rundir import RunDirectory, load_optimizer_file
from hyperfed.rundir.audit.policy import frozen_shared_problems
from hyperfed.rundir.fingerprints import shared_weights_hash
from hyperfed.unlearning.report import forget_and_verify
from hypernet import HypernetTrainer, LocalTrainConfig
from hypernet.base_models import add_lora
from hypernet.errors import ConfigError

CORPUS = CorpusConfig(domains=("legal",), clients_per_domain=3, train_kib=1, val_kib=0.5, test_kib=0.5, block_size=32)


def _fed(**kw) -> FederationConfig:
    local = LocalTrainConfig(steps=2, batch_size=2)
    return FederationConfig(
        rounds=2, lora_rank=2, local=local, shared_policy="frozen", client_residual=True, public_pretrain_rounds=2, **kw
    )


@pytest.fixture(scope="module")
def public():
    return public_clients(CORPUS)


def test_pretraining_moves_the_shared_weights_and_drops_every_pseudo_client(tiny_peft, public):
    fresh = make_server("hyperlora", tiny_peft, _fed()).hypernet
    pre = pp.pretrain_on_public(tiny_peft, _fed(), public)
    assert pre.pseudo_clients == sorted(public) and len(public) >= 3
    assert shared_weights_hash(pre.hypernet) != shared_weights_hash(fresh)
    assert pre.hypernet.client_ids == [] and pre.hypernet.residual_parameters() == []
    assert not any(k for k in pre.hypernet.state_dict() if "vectors." in k or "residuals." in k)
    assert pre.mean_embedding.shape == (fresh.clients.dim,)
    # the kept round is the best on the pseudo-clients' own validation text, round 0 included
    assert 1 <= pre.round <= 2 and sum(pre.val_after.values()) < sum(pre.val_before.values())
    again = pp.pretrain_on_public(tiny_peft, _fed(), public)  # deterministic given the seed
    mine, theirs = pre.hypernet.state_dict(), again.hypernet.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine) and torch.equal(pre.mean_embedding, again.mean_embedding)


def test_frozen_delete_after_public_pretraining_equals_retraining_without_the_client(tiny_peft, public):
    # as in test_shared_policy: equal to float rounding (the generation batch has 3 clients, then 2)
    config = _fed()
    clients = build_corpus(CORPUS).clients
    victim = sorted(clients)[1]
    pre = pp.pretrain_on_public(tiny_peft, config, public)
    servers = []
    for data in (clients, {c: d for c, d in clients.items() if c != victim}):
        model = copy.deepcopy(tiny_peft)
        server = make_server("hyperlora", model, config, hypernet=copy.deepcopy(pre.hypernet))
        server.initial_embedding = pre.mean_embedding
        start = shared_weights_hash(server.hypernet)
        run_rounds(server, model, data, config)
        assert shared_weights_hash(server.hypernet) == start  # frozen during the real run
        servers.append(server)
    full, gold = servers
    full.trainer.remove_client(victim)
    mine, theirs = full.hypernet.state_dict(), gold.hypernet.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        torch.testing.assert_close(mine[key], theirs[key], rtol=0, atol=1e-6, msg=key)


def test_a_user_declares_a_folder_of_texts_public_and_the_frozen_run_never_changes_its_weights(tiny_peft, tmp_path):
    # the README's "your own public data": any {id: ClientData} is public data to pretrain_on_public
    from hyperfed.data.loaders import corpus_from_directory

    texts = {name: load() for name, load in DOMAINS["legal"][1][:2]}  # text no client of CORPUS owns
    for name, text in texts.items():
        (tmp_path / f"{name}.txt").write_text(text[:6000])
    declared = corpus_from_directory(tmp_path, block_size=32)
    assert sorted(declared) == sorted(texts)
    config = _fed()
    pre = pp.pretrain_on_public(tiny_peft, config, declared)
    assert pre.pseudo_clients == sorted(declared) and pre.hypernet.client_ids == []
    model = copy.deepcopy(tiny_peft)
    server = make_server("hyperlora", model, config, hypernet=pre.hypernet)
    server.initial_embedding = pre.mean_embedding
    committed = shared_weights_hash(server.hypernet)
    run_rounds(server, model, build_corpus(CORPUS).clients, config)
    assert shared_weights_hash(server.hypernet) == committed  # frozen: only client-owned state moved
    assert len(server.hypernet.client_ids) == 3


RUN = RunConfig(
    federation=_fed(),
    corpus=CORPUS,
    base_model=BaseModelConfig(
        hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, steps=5, batch_size=2, block_size=32
    ),
    methods=("hyperlora",),
    evaluation=EvaluationConfig(every=1),
    engine="loop",
)


def test_a_run_starts_from_the_pretrained_generator_and_keeps_it_frozen(tmp_path):
    run_experiment(tmp_path / "run", RUN)
    rd = RunDirectory(tmp_path / "run")
    assert rd.checkpoint_rounds() == [0, 1, 2]
    assert frozen_shared_problems(rd) == []  # every checkpoint carries round 0's shared hash
    first = rd.load_checkpoint(0)
    fed = RUN.federation
    model = add_lora(load_or_build_base_model(RUN.base_model), rank=fed.lora_rank, seed=fed.seed)  # as run_method
    unpretrained = make_server("hyperlora", copy.deepcopy(model), fed)
    assert shared_weights_hash(first) != shared_weights_hash(unpretrained.hypernet)
    real = set(build_corpus(CORPUS).clients)
    for round_ in rd.checkpoint_rounds():
        hypernet = rd.load_checkpoint(round_)
        assert set(hypernet.client_ids) == real
        state = load_optimizer_file(rd.checkpoint_dir(round_))
        assert not any(PUBLIC_PREFIX in c for c in HypernetTrainer.clients_in_state(state))
    # every new client started from the pseudo-clients' mean embedding
    embeddings = [first.client_parameter(c).detach() for c in sorted(real)]
    assert all(torch.equal(e, embeddings[0]) for e in embeddings)
    # the forget report's gold retraining builds the same generator, from the cache or afresh
    cached = pp.make_run_server("hyperlora", copy.deepcopy(model), fed, CORPUS)
    pp._CACHE.clear()
    fresh = pp.make_run_server("hyperlora", copy.deepcopy(model), fed, CORPUS)
    assert shared_weights_hash(cached.hypernet) == shared_weights_hash(fresh.hypernet) == shared_weights_hash(first)
    # and a delete then matches it: the retained clients' losses after delete equal the gold's
    report = forget_and_verify(rd.root, sorted(real)[0], "delete", num_candidates=4, attack_steps=1)
    rows = {r.name: r for r in report.rows}
    after, gold = rows["after delete"], rows["retrain (gold)"]
    assert after.retained_loss == pytest.approx(gold.retained_loss, abs=1e-5)
    assert after.forgotten_loss == pytest.approx(gold.forgotten_loss, abs=1e-5)  # both: the newcomer adapter


def test_public_pretrain_rounds_is_validated_and_travels_in_the_flat_config():
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="public_pretrain_rounds"):
            FederationConfig(public_pretrain_rounds=bad)
    config = RunConfig.from_run_config({"public-pretrain-rounds": 7})
    assert config.federation.public_pretrain_rounds == 7
    assert config.to_run_config()["public-pretrain-rounds"] == 7
    assert RunConfig.from_dict(config.to_dict()) == config
    assert replace(FederationConfig(), public_pretrain_rounds=0).public_pretrain_rounds == 0


def test_the_flower_server_app_builds_the_publicly_pretrained_generator():
    from hyperfed.flower.server_app import build_strategy

    server = build_strategy(RUN).server
    plain = build_strategy(replace(RUN, federation=replace(RUN.federation, public_pretrain_rounds=0))).server
    assert server.hypernet.client_ids == [] and server.initial_embedding is not None
    assert shared_weights_hash(server.hypernet) != shared_weights_hash(plain.hypernet)


def test_the_frozen_guarantee_says_the_shared_weights_saw_public_text_only():
    from hyperfed.federation.privacy import describe_guarantee

    guarantee = describe_guarantee(_fed(), 2)
    assert guarantee["guarantee"] == "exact" and "public text only, 2 rounds" in guarantee["text"]
    assert "public" not in describe_guarantee(replace(_fed(), public_pretrain_rounds=0), 2)["text"]


def test_the_dp_guarantee_names_public_pretraining_and_its_epsilon_ignores_it():
    from hyperfed.federation.privacy import client_level_epsilon, describe_guarantee

    fed = replace(_fed(), shared_policy="dp", dp_scope="base", dp_noise_multiplier=1.25, sample_rate=0.25)
    guarantee = describe_guarantee(fed, 20)
    assert "shared weights were pretrained on public text only, 2 rounds before any client" in guarantee["text"]
    assert guarantee["epsilon"] == client_level_epsilon(1.25, 0.25, 20, fed.dp_delta)  # public rounds cost no ε
    assert "public" not in describe_guarantee(replace(fed, public_pretrain_rounds=0), 20)["text"]
