"""public_clients: pseudo-clients cut from the pretraining text, disjoint from every client."""

import torch

from hyperfed.data.corpus import DOMAINS, PUBLIC_PREFIX, CorpusConfig, build_corpus, public_clients

CONFIG = CorpusConfig(train_kib=4, val_kib=1, block_size=64)


def test_one_pseudo_client_per_pretraining_source_cut_like_a_client():
    public = public_clients(CONFIG)
    corpus = build_corpus(CONFIG)
    sources = {f"{PUBLIC_PREFIX}{d}/{name}" for d in CONFIG.domains for name, _ in DOMAINS[d][1]}
    assert set(public) <= sources and len(public) >= len(sources) - 1  # BSD may be too short at larger blocks
    assert not set(public) & set(corpus.clients)
    for data in public.values():
        assert data.train.shape[1] == data.val.shape[1] == CONFIG.block_size and data.test is None
        assert data.train.shape[0] <= 4 * 1024 // 64 and data.val.shape[0] <= 1024 // 64


def test_no_public_block_is_in_any_clients_text():
    client_text = b"\x00".join(
        load().encode("utf-8")
        for d in CONFIG.domains
        for _, load in DOMAINS[d][0][: CONFIG.clients_per_domain]  # each client's whole source
    )
    for cid, data in public_clients(CONFIG).items():
        for block in torch.cat([data.train, data.val]):
            assert bytes(block.tolist()) not in client_text, cid


def test_public_clients_are_deterministic():
    first, again = public_clients(CONFIG), public_clients(CONFIG)
    assert list(first) == list(again)
    for cid in first:
        assert torch.equal(first[cid].train, again[cid].train) and torch.equal(first[cid].val, again[cid].val)


def test_a_larger_train_budget_takes_more_of_each_source_and_keeps_the_validation_text():
    import math

    config = CorpusConfig(domains=("docs", "legal"), train_kib=4, val_kib=1, block_size=64)
    small, whole = public_clients(config), public_clients(config, train_kib=math.inf)
    assert set(small) - {f"{PUBLIC_PREFIX}legal/BSD"} <= set(whole)
    assert (
        whole[f"{PUBLIC_PREFIX}docs/reference-5of5"].train.shape[0]
        > 10 * small[f"{PUBLIC_PREFIX}docs/reference-5of5"].train.shape[0]
    )
    for cid in whole:
        assert whole[cid].val.shape[0] <= 1024 // 64


def test_a_public_share_is_withheld_from_the_base_models_text_and_is_all_the_pseudo_clients_see():
    import math

    from hyperfed.data.corpus import pretraining_text

    config = CorpusConfig(domains=("docs", "legal"), train_kib=4, val_kib=1, block_size=64, public_share=0.5)
    seen_by_base = pretraining_text(config.domains, 0.5)
    whole = pretraining_text(config.domains)
    assert 0.49 < len(seen_by_base) / len(whole) < 0.51  # half of every source, its first half
    public = public_clients(config, train_kib=math.inf)
    assert public and set(public) <= set(public_clients(CorpusConfig(domains=("docs", "legal"), block_size=64)))
    sources = [load() for d in config.domains for _, load in DOMAINS[d][1]]
    withheld = b"\x00".join(text[len(text) - int(len(text) * 0.5) :].encode("utf-8") for text in sources)
    for cid, data in public.items():
        for block in torch.cat([data.train, data.val]):
            assert bytes(block.tolist()) in withheld, cid  # cut from the part the base never trains on
    assert build_corpus(config).pretrain_text == seen_by_base


def test_the_corpus_public_share_follows_the_base_model_and_a_conflict_is_named():
    import pytest

    from hyperfed.base_model import BaseModelConfig
    from hyperfed.config import RunConfig
    from hypernet.errors import ConfigError

    config = RunConfig(base_model=BaseModelConfig(public_share=0.25))
    assert config.corpus.public_share == 0.25
    assert RunConfig.from_run_config(config.to_run_config()) == config
    assert BaseModelConfig().key("text") == BaseModelConfig(public_share=0.0).key("text")  # old caches stay valid
    with pytest.raises(ConfigError, match="corpus.public_share"):
        RunConfig(base_model=BaseModelConfig(public_share=0.25), corpus=CorpusConfig(public_share=0.5))
    with pytest.raises(ConfigError, match="public_share"):
        BaseModelConfig(public_share=1.0)
