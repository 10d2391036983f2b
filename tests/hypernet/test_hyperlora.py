import pytest
import torch
from peft import get_peft_model_state_dict

from hypernet import (
    ConfigError,
    DuplicateClientError,
    HyperLoRA,
    HyperLoRAConfig,
    UnknownClientError,
    causal_lm_loss,
    functional_forward,
)


def _base_logits(model, x):
    with torch.no_grad(), model.disable_adapter():
        return model(input_ids=x).logits


def test_generate_returns_peft_keys_and_shapes(arch_model):
    hn = HyperLoRA.from_peft_model(arch_model, client_ids=["alice"])
    adapter = hn.generate("alice")
    reference = get_peft_model_state_dict(arch_model)
    assert list(adapter) == list(reference)
    for key, value in reference.items():
        assert adapter[key].shape == value.shape


@pytest.mark.parametrize("chunk_size", [None, 100])
def test_init_adapter_leaves_logits_equal_to_base_model(arch_model, chunk_size):
    hn = HyperLoRA.from_peft_model(arch_model, HyperLoRAConfig(chunk_size=chunk_size), client_ids=["alice", "bob"])
    x = torch.randint(0, 260, (2, 12))
    with torch.no_grad():
        adapter = hn.generate("bob")
        out = functional_forward(arch_model, adapter, input_ids=x).logits
    assert all(float(v.abs().max()) == 0.0 for k, v in adapter.items() if "lora_B" in k)
    assert any(float(v.abs().max()) > 0.0 for k, v in adapter.items() if "lora_A" in k)
    assert torch.equal(out, _base_logits(arch_model, x))


def test_base_a_matches_peft_default_init_scale(llama_model):
    hn = HyperLoRA.from_peft_model(llama_model, client_ids=["a"])
    for target in hn.spec:
        a = hn.generate("a")[target.a_key].detach()
        bound = 1 / target.in_features**0.5
        assert float(a.abs().max()) <= bound + 1e-2  # kaiming_uniform(a=√5) → U(±1/√in), plus a tiny head term


def test_batch_generation_equals_single(llama_model):
    hn = HyperLoRA.from_peft_model(llama_model, client_ids=["a", "b", "c"])
    with torch.no_grad():
        many = hn.generate_many(["c", "a"])
        for cid in ("a", "c"):
            single = hn.generate(cid)
            for key in single:
                torch.testing.assert_close(many[cid][key], single[key], rtol=0, atol=1e-6)


def test_chunked_heads_have_fewer_head_parameters(llama_model):
    plain = HyperLoRA.from_peft_model(llama_model, HyperLoRAConfig(hidden_dim=32))
    chunked = HyperLoRA.from_peft_model(llama_model, HyperLoRAConfig(hidden_dim=32, chunk_size=64))
    head_params = lambda hn: sum(g.head.weight.numel() for g in hn.groups)  # noqa: E731
    assert head_params(chunked) < head_params(plain) / 5


def test_clients_added_and_removed_without_touching_others(llama_model):
    hn = HyperLoRA.from_peft_model(llama_model, client_ids=["a", "b"])
    with torch.no_grad():
        before = {k: v.clone() for k, v in hn.generate("a").items()}
        emb_a = hn.clients.parameter("a").detach().clone()
        hn.add_client("c")
        removed = hn.remove_client("b")
        after = hn.generate("a")
    assert torch.equal(hn.clients.parameter("a"), emb_a)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert hn.client_ids == ["a", "c"]
    assert removed.shape == (hn.config.client_dim,)
    with pytest.raises(UnknownClientError, match="'b'"):
        hn.generate("b")
    with pytest.raises(DuplicateClientError):
        hn.add_client("a")


def test_client_embedding_is_a_function_of_seed_and_id(llama_model):
    one = HyperLoRA.from_peft_model(llama_model, client_ids=["x", "y"])
    two = HyperLoRA.from_peft_model(llama_model, client_ids=["y", "x"])  # other order
    for cid in ("x", "y"):
        assert torch.equal(one.clients.parameter(cid), two.clients.parameter(cid))
    assert not torch.equal(one.clients.parameter("x"), one.clients.parameter("y"))


def test_ids_with_dots_and_unicode_are_fine(llama_model):
    hn = HyperLoRA.from_peft_model(llama_model, client_ids=["org.team/alice", "böb"])
    assert set(hn.generate_many(["org.team/alice", "böb"])) == {"org.team/alice", "böb"}
    with pytest.raises(TypeError):
        hn.add_client("")


def test_gradient_reaches_trunk_and_only_the_used_client(llama_model):
    hn = HyperLoRA.from_peft_model(llama_model, client_ids=["a", "b", "c"])
    x = torch.randint(0, 260, (2, 12))
    opt = torch.optim.SGD(hn.parameters(), lr=0.5)
    for _ in range(2):  # at init B = 0, so only the B head moves on the first step (as in plain LoRA)
        opt.zero_grad(set_to_none=True)
        causal_lm_loss(llama_model, hn.generate("a"), x).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    causal_lm_loss(llama_model, hn.generate("a"), x).backward()
    assert hn.trunk[0].weight.grad is not None and float(hn.trunk[0].weight.grad.abs().sum()) > 0
    assert float(hn.clients.parameter("a").grad.abs().sum()) > 0
    assert hn.clients.parameter("b").grad is None and hn.clients.parameter("c").grad is None


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="hidden_dim"):
        HyperLoRAConfig(hidden_dim=0)
    with pytest.raises(ConfigError, match="chunk_size"):
        HyperLoRAConfig(chunk_size=-3)
    with pytest.raises(ConfigError, match="unknown"):
        HyperLoRAConfig.from_dict({"hiden_dim": 3})


def test_dtype_and_device_follow_the_module(llama_model):
    hn = HyperLoRA.from_peft_model(llama_model, client_ids=["a"]).to(torch.float64)
    hn.add_client("b")
    assert hn.clients.parameter("b").dtype == torch.float64
    assert all(v.dtype == torch.float64 for v in hn.generate("b").values())


def test_generate_returns_one_adapter_and_generate_many_a_dict_of_them(llama_model):
    hn = HyperLoRA.from_peft_model(llama_model, client_ids=["a", "b"])
    with torch.no_grad():
        one = hn.generate("a")
        many = hn.generate_many(["b", "a"])
    assert set(one) == set(hn.spec.state_dict_shapes())
    assert all(isinstance(v, torch.Tensor) for v in one.values())
    assert list(many) == ["b", "a"]
    assert all(set(adapter) == set(one) for adapter in many.values())
    for k in one:  # batched matmuls may round differently from a batch of one
        torch.testing.assert_close(many["a"][k], one[k], rtol=0, atol=1e-6)
    assert hn.generate_many([]) == {}


@pytest.mark.parametrize("wrong", [["a"], ("a", "b")])
def test_generate_refuses_many_ids_and_points_at_generate_many(llama_model, wrong):
    hn = HyperLoRA.from_peft_model(llama_model, client_ids=["a", "b"])
    with pytest.raises(TypeError, match="generate_many"):
        hn.generate(wrong)
    with pytest.raises(TypeError, match=r"generate\(client_id\)"):
        hn.generate_many("a")
