"""Client-owned residual adapters (HyperLoRAConfig.client_residual)."""

import torch
from safetensors.torch import load_file

from hypernet import (
    HyperLoRA,
    HyperLoRAConfig,
    HypernetTrainer,
    TrainerConfig,
    embedding_tensor_names,
    functional_forward,
    load_hypernet,
    save_hypernet,
)
from hypernet.io import HYPERNET_WEIGHTS


def _hn(model, ids=("a", "b")):
    return HyperLoRA.from_peft_model(model, HyperLoRAConfig(client_residual=True), client_ids=list(ids))


def test_residual_starts_at_zero_and_leaves_logits_equal_to_base(llama_model):
    hn = _hn(llama_model)
    plain = HyperLoRA.from_peft_model(llama_model, client_ids=["a", "b"])
    x = torch.randint(0, 260, (2, 12))
    with torch.no_grad():
        adapter = hn.generate("a")
        for key, value in plain.generate("a").items():  # same keys, shapes and values as without residual
            assert torch.equal(adapter[key], value)
        out = functional_forward(llama_model, adapter, input_ids=x).logits
        with llama_model.disable_adapter():
            base = llama_model(input_ids=x).logits
    assert torch.equal(out, base)
    assert hn.residual_parameter("a").shape == (hn.spec.adapter_numel,)
    assert float(hn.residual_parameter("a").detach().abs().max()) == 0.0


def test_residual_is_added_to_the_generated_adapter_and_is_client_owned(llama_model):
    hn = _hn(llama_model)
    with torch.no_grad():
        before = hn.generate("a")
        hn.residual_parameter("a").add_(1.0)
        after = hn.generate("a")
        other = hn.generate("b")
    assert all(torch.allclose(after[k], before[k] + 1.0) for k in before)
    assert all(float(v.abs().max()) == 0.0 for k, v in other.items() if "lora_B" in k)  # b unaffected
    shared = {id(p) for p in hn.shared_parameters()}
    assert all(id(p) not in shared for p in hn.residual_parameters())
    assert hn.num_shared_parameters() == HyperLoRA.from_peft_model(llama_model).num_shared_parameters()


def test_names_partition_the_checkpoint_and_a_reload_keeps_residuals(llama_model, tmp_path):
    hn = _hn(llama_model)
    with torch.no_grad():
        hn.residual_parameter("b").normal_()
    save_hypernet(hn, tmp_path / "ckpt")
    saved = set(load_file(tmp_path / "ckpt" / HYPERNET_WEIGHTS))
    owned = {n for cid in hn.client_ids for n in embedding_tensor_names(cid)}
    assert owned <= saved
    assert HyperLoRA.shared_tensor_names(hn.spec, hn.config.to_dict()) == saved - owned
    loaded = load_hypernet(tmp_path / "ckpt")
    assert torch.equal(loaded.residual_parameter("b"), hn.residual_parameter("b"))


def test_remove_client_deletes_the_residual_from_model_and_optimizer(llama_model):
    hn = _hn(llama_model, ["a", "b", "c"])
    trainer = HypernetTrainer(hn, llama_model, TrainerConfig())
    residual = hn.residual_parameter("b")
    trainer.remove_client("b")
    assert "b" not in hn.client_ids and len(hn.residual_parameters()) == 2
    assert all(p is not residual for p in trainer.residual_optimizer.param_groups[0]["params"])
    assert embedding_tensor_names("b")[1] not in hn.state_dict()
    trainer.add_client("d")
    assert hn.residual_parameter("d") is trainer.residual_optimizer.param_groups[0]["params"][-1]


def test_residual_step_of_one_absorbs_the_clients_own_update_whatever_the_weights(llama_model):
    hn = _hn(llama_model)
    trainer = HypernetTrainer(hn, llama_model, TrainerConfig(lr=1e-3, embedding_lr=1e-12, residual_lr=1.0))
    shared_before = [p.detach().clone() for p in hn.shared_parameters()]
    with torch.no_grad():
        sent = {c: {k: v.clone() for k, v in hn.generate(c).items()} for c in ("a", "b")}
    g = torch.Generator().manual_seed(0)
    returned = {c: {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in a.items()} for c, a in sent.items()}
    trainer.apply_client_updates(returned, sent, weights={"a": 1.0, "b": 3.0}, update_shared=False)
    assert all(torch.equal(p, q) for p, q in zip(hn.shared_parameters(), shared_before, strict=True))
    with torch.no_grad():
        for cid in ("a", "b"):
            now = hn.generate(cid)
            for key, value in returned[cid].items():
                torch.testing.assert_close(now[key], value, atol=1e-6, rtol=0)
