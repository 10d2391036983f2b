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
                assert tok.decode(block[:96]) not in corpus.pretrain_text, cid
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
