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
