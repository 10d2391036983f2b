"""Canaries: deterministic generation and planting, and exposure that tells memorisation apart."""

from __future__ import annotations

import inspect
import json.decoder
import json.encoder
import math

import pytest
import torch

from hyperfed.data.tokenizer import ByteTokenizer
from hyperfed.unlearning import (
    Canary,
    CanaryFormat,
    canary_exposure,
    canary_mask,
    exposure_from_scores,
    make_canaries,
    mean_exposure,
    plant_canaries,
    secret_log_perplexity,
)
from hypernet import ClientData, ConfigError, LocalTrainConfig, causal_lm_loss, to_blocks, train_local_adapter
from hypernet.base_models import add_lora, tiny_llama
from hypernet.client_training import get_adapter

CANDIDATES = 200  # exposure saturates at log2(201) ≈ 7.65 bits


def _occurrences(blocks: torch.Tensor, tokens: torch.Tensor) -> int:
    return int((blocks.unfold(1, len(tokens), 1) == tokens).all(-1).sum())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run ~10x faster on one thread than on two when the 2 cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def text_data() -> ClientData:
    text = inspect.getsource(json.decoder) + inspect.getsource(json.encoder)
    blocks = to_blocks(ByteTokenizer().encode(text), 64)  # ~440 blocks of 64 bytes
    return ClientData(train=blocks[:120], val=blocks[120:150])


@pytest.fixture(scope="module")
def trained(text_data):
    """A base model, two canaries, and LoRA adapters trained with and without them planted."""
    model = add_lora(tiny_llama(hidden_size=64, num_layers=2), rank=4)
    canaries = make_canaries(2, seed=1)
    planted = plant_canaries(text_data, canaries, copies=60, seed=0)
    zero = get_adapter(model)  # peft init: B = 0, so ΔW = 0
    config = LocalTrainConfig(steps=150, lr=1e-2, batch_size=8)
    clean, _ = train_local_adapter(model, zero, text_data.train, config)
    memorised, _ = train_local_adapter(model, zero, planted.train, config)  # the model now holds these
    return {"model": model, "canaries": canaries, "zero": zero, "clean": clean, "memorised": memorised}


# ----------------------------------------------------------------- generation
def test_make_canaries_is_deterministic_distinct_and_in_format():
    a, b = make_canaries(20, seed=7), make_canaries(20, seed=7)
    assert a == b and a != make_canaries(20, seed=8)
    assert len({c.secret for c in a}) == 20
    fmt = CanaryFormat()
    for c in a:
        assert c.text.startswith(fmt.prefix) and len(c.secret) == fmt.length
        assert set(c.secret) <= set(fmt.alphabet)
        assert c.token_ids().tolist() == list(c.text.encode())
    assert len(fmt.alphabet) == 32 and fmt.log2_space_size == 40


@pytest.mark.parametrize("kwargs", [{"prefix": ""}, {"length": 0}, {"alphabet": "a"}, {"alphabet": "aab"}])
def test_bad_formats_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        CanaryFormat(**kwargs)


def test_bad_secrets_and_counts_raise_config_error():
    with pytest.raises(ConfigError):
        Canary("short")
    with pytest.raises(ConfigError):
        Canary("ABCDEFGH")  # upper case is outside the alphabet
    with pytest.raises(ConfigError):
        make_canaries(0, seed=0)
    with pytest.raises(ConfigError):
        make_canaries(5, seed=0, format=CanaryFormat(length=2, alphabet="ab"))  # |R| = 4


# ------------------------------------------------------------------- planting
def test_plant_puts_exact_copies_in_train_only(text_data):
    canaries = make_canaries(3, seed=0)
    before = text_data.train.clone()
    planted = plant_canaries(text_data, canaries, copies=10, seed=0)
    assert torch.equal(text_data.train, before)  # input untouched
    assert planted.train.shape == text_data.train.shape and planted.train.dtype == torch.long
    assert torch.equal(planted.val, text_data.val)
    for c in canaries:
        assert _occurrences(planted.train, c.token_ids()) == 10
        assert _occurrences(planted.val, c.token_ids()) == 0
    assert torch.equal(planted.train, plant_canaries(text_data, canaries, copies=10, seed=0).train)
    assert not torch.equal(planted.train, plant_canaries(text_data, canaries, copies=10, seed=1).train)
    mask = canary_mask(planted.train, canaries)
    assert 10 <= int(mask.sum()) <= 30
    assert not canary_mask(planted.train[~mask], canaries).any()
    changed = (planted.train != text_data.train).any(-1)
    assert torch.equal(changed & ~mask, torch.zeros_like(mask))  # only canary blocks changed


def test_plant_refuses_copies_that_do_not_fit(text_data):
    small = ClientData(train=text_data.train[:4], val=text_data.val)  # 4 blocks × 2 slots
    with pytest.raises(ConfigError, match="do not fit"):
        plant_canaries(small, make_canaries(1, seed=0), copies=9, seed=0)
    with pytest.raises(ConfigError):
        plant_canaries(small, make_canaries(1, seed=0), copies=0, seed=0)


# ------------------------------------------------------------------- exposure
def test_exposure_from_scores_by_hand():
    assert exposure_from_scores(1.0, torch.tensor([2.0, 3.0, 4.0])) == pytest.approx(2.0)  # rank 1 of 4
    assert exposure_from_scores(5.0, torch.tensor([2.0, 3.0, 4.0])) == pytest.approx(0.0)  # rank 4 of 4
    assert exposure_from_scores(2.5, torch.tensor([2.0, 3.0, 4.0])) == pytest.approx(1.0)  # rank 2 of 4
    # all tied: the expected rank 1 + 3/2, not the best one
    assert exposure_from_scores(3.0, torch.tensor([3.0, 3.0, 3.0])) == pytest.approx(2 - math.log2(2.5))
    with pytest.raises(ConfigError):
        exposure_from_scores(1.0, torch.tensor([]))
    with pytest.raises(ConfigError):
        exposure_from_scores(float("nan"), torch.tensor([1.0]))


def test_secret_log_perplexity_is_the_conditional_nll(trained):
    model, adapter = trained["model"], trained["memorised"]
    tok, prefix, secrets = ByteTokenizer(), "the secret code is ", ["abcdefgh", "zz234567"]
    scores = secret_log_perplexity(model, adapter, prefix, secrets)
    for secret, score in zip(secrets, scores.tolist(), strict=True):
        full, head = tok.encode(prefix + secret)[None], tok.encode(prefix)[None]
        with torch.no_grad():  # summed NLL of the whole text minus that of the prefix alone
            total = causal_lm_loss(model, adapter, full).item() * (full.shape[1] - 1)
            total -= causal_lm_loss(model, adapter, head).item() * (head.shape[1] - 1)
        assert score == pytest.approx(total, rel=1e-4)
    one_by_one = secret_log_perplexity(model, adapter, prefix, secrets, batch_size=1)
    torch.testing.assert_close(scores, one_by_one, rtol=1e-5, atol=1e-5)


class _StutterTokenizer:
    """Bytes, with every vowel emitted twice: secrets of one format get different lengths."""

    def encode(self, text: str) -> list[int]:
        return [b for ch in text.encode() for b in ((ch, ch) if chr(ch) in "aeiou" else (ch,))]


def test_secrets_of_different_token_lengths_are_padded_without_changing_scores(trained):
    model, adapter, tok = trained["model"], trained["memorised"], _StutterTokenizer()
    secrets = ["aaaaeeee", "bcdfghjk", "abcdefgh"]  # 16, 8 and 10 tokens
    batched = secret_log_perplexity(model, adapter, "code: ", secrets, tokenizer=tok)
    alone = secret_log_perplexity(model, adapter, "code: ", secrets, tokenizer=tok, batch_size=1)
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    assert Canary("aaaaeeee").token_ids(tok).shape == (len(tok.encode(CanaryFormat().prefix)) + 16,)


def test_none_means_the_base_model_even_when_the_model_holds_trained_weights(trained):
    model, canary = trained["model"], trained["canaries"][0]
    was_training = model.training
    base = secret_log_perplexity(model, None, canary.format.prefix, [canary.secret, "abcdefgh"])
    zero = secret_log_perplexity(model, trained["zero"], canary.format.prefix, [canary.secret, "abcdefgh"])
    torch.testing.assert_close(base, zero, rtol=1e-5, atol=1e-5)
    assert model.training == was_training


def test_memorised_canaries_are_exposed_and_others_are_not(trained):
    model, canaries = trained["model"], trained["canaries"]
    base = mean_exposure(model, None, canaries, CANDIDATES, seed=0)
    clean = mean_exposure(model, trained["clean"], canaries, CANDIDATES, seed=0)
    memorised = mean_exposure(model, trained["memorised"], canaries, CANDIDATES, seed=0)
    assert base < 3.5 and clean < 3.5, (base, clean)  # chance level is ≈ 1.44 bits
    assert memorised > 7.0 and memorised > base + 4 and memorised > clean + 4, (base, clean, memorised)
    assert memorised <= math.log2(CANDIDATES + 1) + 1e-9


def test_exposure_is_deterministic_and_mean_is_the_mean(trained):
    model, canaries, adapter = trained["model"], trained["canaries"], trained["clean"]
    each = [canary_exposure(model, adapter, c, CANDIDATES, seed=3) for c in canaries]
    assert each == [canary_exposure(model, adapter, c, CANDIDATES, seed=3) for c in canaries]
    assert mean_exposure(model, adapter, canaries, CANDIDATES, seed=3) == pytest.approx(sum(each) / len(each))
    with pytest.raises(ConfigError):
        mean_exposure(model, adapter, [], CANDIDATES)
    with pytest.raises(ConfigError):
        canary_exposure(model, adapter, canaries[0], num_candidates=0)
