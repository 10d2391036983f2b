import pytest
import torch

from hyperfed.data import ByteTokenizer
from hyperfed.data.corpus import CorpusConfig, build_corpus
from hypernet.errors import ConfigError


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(CorpusConfig(clients_per_domain=4, train_kib=8, val_kib=2))


def test_clients_come_from_three_domains_with_the_asked_sizes(corpus):
    assert set(corpus.domain_of.values()) == {"code", "docs", "legal"}
    assert len(corpus.clients) == 12
    for data in corpus.clients.values():
        assert data.train.shape == (64, 128) and data.val.shape == (16, 128)


def test_build_is_deterministic(corpus):
    again = build_corpus(CorpusConfig(clients_per_domain=4, train_kib=8, val_kib=2))
    assert again.manifest == corpus.manifest
    assert all(torch.equal(again.clients[c].train, corpus.clients[c].train) for c in corpus.clients)


def test_no_client_text_is_in_the_pretraining_text_or_in_its_own_train_split(corpus):
    tok = ByteTokenizer()
    for cid, data in corpus.clients.items():
        for blocks in (data.train[::16], data.val[::4]):
            for block in blocks:
                assert tok.decode(block) not in corpus.pretrain_text, cid  # a whole block: docs repeat phrases
        train_text = "".join(tok.decode(b) for b in data.train)
        assert tok.decode(data.val[0][:96]) not in train_text


def test_clients_really_differ_across_domains(corpus):
    # byte histograms: clients of one domain are closer to each other than to other domains
    def hist(cid):
        h = torch.bincount(corpus.clients[cid].train.flatten(), minlength=256).float()
        return h / h.sum()

    ids = list(corpus.clients)
    dist = {(a, b): float((hist(a) - hist(b)).abs().sum()) for a in ids for b in ids if a < b}
    same = [d for (a, b), d in dist.items() if corpus.domain_of[a] == corpus.domain_of[b]]
    cross = [d for (a, b), d in dist.items() if corpus.domain_of[a] != corpus.domain_of[b]]
    assert sum(same) / len(same) < sum(cross) / len(cross)


def test_too_much_data_asked_is_a_config_error():
    with pytest.raises(ConfigError, match="KiB"):
        build_corpus(CorpusConfig(domains=("legal",), train_kib=200))
    with pytest.raises(ConfigError, match="domains"):
        CorpusConfig(domains=("poetry",))


def test_byte_tokenizer_round_trips_utf8():
    tok = ByteTokenizer()
    text = "naïve café — 日本"
    assert tok.decode(tok.encode(text)) == text
    assert int(tok.encode(text).max()) < 256 < tok.vocab_size


def test_train_val_test_are_disjoint_byte_ranges_with_test_at_the_very_end():
    from hyperfed.data.corpus import split_ranges

    config = CorpusConfig(train_kib=3, val_kib=1, test_kib=2)
    ranges = split_ranges(config)
    assert ranges == {"train": (-6144, -3072), "val": (-3072, -2048), "test": (-2048, 0)}
    spans = [ranges[s] for s in ("train", "val", "test")]
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # adjacent, in order
    assert all(start < stop for start, stop in spans)  # so no byte belongs to two splits
    assert "test" not in split_ranges(CorpusConfig(test_kib=0))


def test_the_test_split_is_the_end_of_each_source_and_seen_nowhere_else():
    tok = ByteTokenizer()
    corpus = build_corpus(
        CorpusConfig(domains=("code", "docs"), clients_per_domain=2, train_kib=4, val_kib=1, test_kib=1)
    )
    for cid, data in corpus.clients.items():
        assert data.test is not None and data.test.shape == (8, 128)
        train = "".join(tok.decode(b) for b in data.train)
        val = "".join(tok.decode(b) for b in data.val)
        for block in data.test:
            probe = tok.decode(block[:96])
            assert probe not in train and probe not in val and probe not in corpus.pretrain_text, cid
    assert all(c.test is None for c in build_corpus(CorpusConfig(domains=("docs",), test_kib=0)).clients.values())


def test_the_default_corpus_builds_with_all_three_splits():
    corpus = build_corpus(CorpusConfig())
    assert len(corpus.clients) == 9 and set(corpus.domain_of.values()) == {"code", "docs", "legal"}
    assert all(d.val.shape == d.test.shape == (24, 128) for d in corpus.clients.values())


def test_shards_cut_many_small_disjoint_clients_from_each_source_the_first_one_being_the_unsharded_client():
    config = CorpusConfig(domains=("code", "docs"), clients_per_domain=2, train_kib=1, val_kib=0.25, test_kib=0.25)
    whole = build_corpus(config)
    sharded = build_corpus(CorpusConfig(**{**config.__dict__, "shards": 12}))
    assert len(sharded.clients) == 4 * 12
    assert sharded.client_ids[:3] == ["code/asyncio.01", "code/asyncio.02", "code/asyncio.03"]
    assert {sharded.domain_of[c] for c in sharded.clients} == {"code", "docs"}
    first = sharded.clients["code/asyncio.01"]  # shard 1 = the end of the source, as one client
    assert torch.equal(first.test, whole.clients["code/asyncio"].test)
    assert torch.equal(first.train, whole.clients["code/asyncio"].train)
    tok = ByteTokenizer()
    texts = {
        c: [tok.decode(b) for d in (data.train, data.val, data.test) for b in d] for c, data in sharded.clients.items()
    }
    for cid, data in sharded.clients.items():
        assert data.train.shape == (8, 128) and data.val.shape == (2, 128) and data.test.shape == (2, 128)
        if cid.endswith(".01"):
            continue
        neighbour = cid[:-2] + f"{int(cid[-2:]) - 1:02d}"  # the shard just after it in the source
        assert not set(texts[cid]) & set(texts[neighbour]), cid  # no shared block: disjoint byte ranges
    assert len(set(sharded.manifest.values())) == len(sharded.clients)


def test_shards_that_do_not_fit_the_source_or_are_not_positive_are_config_errors():
    with pytest.raises(ConfigError, match="shards"):
        build_corpus(
            CorpusConfig(domains=("legal",), clients_per_domain=1, train_kib=2, val_kib=1, test_kib=1, shards=9)
        )
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="shards"):
            CorpusConfig(shards=bad)
