"""Embedding-recovery attack: fits a new embedding, and never touches the hypernetwork."""

from __future__ import annotations

import pytest
import torch

from hyperfed.unlearning import adapter_from_embedding, embedding_recovery_attack
from hypernet import ClientData, ConfigError, HyperLoRA, HypernetTrainer, TrainerConfig, evaluate_loss
from hypernet.base_models import add_lora, tiny_llama


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run ~10x faster on one thread than on two when the 2 cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cyclic_client(seed: int, n_blocks: int = 32, block: int = 32) -> ClientData:
    """Text cycling through a client-specific 8-symbol alphabet: learnable and non-IID."""
    g = torch.Generator().manual_seed(seed)
    alphabet = torch.randperm(256, generator=g)[:8]
    start = torch.randint(0, 8, (n_blocks,), generator=g)
    blocks = alphabet[(start[:, None] + torch.arange(block)) % 8]  # (n_blocks, block)
    return ClientData(train=blocks[:24], val=blocks[24:])


@pytest.fixture(scope="module")
def system():
    """A hypernetwork trained end to end on 4 clients, then 'client-0' deleted from it."""
    model = add_lora(tiny_llama(hidden_size=64, num_layers=2), rank=4)
    data = {f"client-{i}": _cyclic_client(i) for i in range(4)}
    hn = HyperLoRA.from_peft_model(model, client_ids=list(data))
    HypernetTrainer(hn, model, TrainerConfig(lr=3e-3, clients_per_step=4)).fit(data, steps=60)
    with torch.no_grad():
        own = hn.generate("client-0")
    hn.remove_client("client-0")
    return {"model": model, "hn": hn, "data": data, "own": own}


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    state.update({f"{n}.grad": None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()})
    state.update({f"{n}.requires_grad": torch.tensor(p.requires_grad) for n, p in module.named_parameters()})
    return state


def _assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert (value is None and after[key] is None) or torch.equal(value, after[key]), key


def test_attack_leaves_hypernetwork_and_model_bitwise_unchanged(system):
    hn, model = system["hn"], system["model"]
    hn_before, model_before, ids = _snapshot(hn), _snapshot(model), hn.client_ids
    embedding = embedding_recovery_attack(hn, model, system["data"]["client-0"].val, steps=5, lr=1e-2, seed=0)
    adapter_from_embedding(hn, embedding)
    _assert_same(hn_before, _snapshot(hn))
    _assert_same(model_before, _snapshot(model))
    assert hn.client_ids == ids and "client-0" not in hn.clients
    assert embedding.shape == (hn.config.client_dim,) and not embedding.requires_grad


def test_attack_fits_the_forgotten_clients_text(system):
    hn, model, data = system["hn"], system["model"], system["data"]["client-0"]
    start = torch.randn(hn.config.client_dim, generator=torch.Generator().manual_seed(0)) * hn.config.client_init_std
    fitted = embedding_recovery_attack(hn, model, data.val, steps=40, lr=3e-2, seed=0, init=start)
    before = evaluate_loss(model, adapter_from_embedding(hn, start), data.train)
    after = evaluate_loss(model, adapter_from_embedding(hn, fitted), data.train)  # held-out from the attack
    own = evaluate_loss(model, system["own"], data.train)
    assert after < before - 0.2, (before, after, own)
    assert torch.equal(fitted, embedding_recovery_attack(hn, model, data.val, steps=40, lr=3e-2, seed=0, init=start))


def test_adapter_from_embedding_equals_generate_for_a_registered_client(system):
    hn = system["hn"]
    with torch.no_grad():
        expected = hn.generate("client-1")
    got = adapter_from_embedding(hn, hn.clients.parameter("client-1"))
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-7)
        assert not got[key].requires_grad


def test_bad_inputs_raise_config_error(system):
    hn, model, blocks = system["hn"], system["model"], system["data"]["client-0"].val
    with pytest.raises(ConfigError):
        adapter_from_embedding(hn, torch.zeros(hn.config.client_dim + 1))
    with pytest.raises(ConfigError):
        adapter_from_embedding(hn, torch.full((hn.config.client_dim,), float("nan")))
    with pytest.raises(ConfigError):
        embedding_recovery_attack(hn, model, blocks, steps=-1)
    with pytest.raises(ConfigError):
        embedding_recovery_attack(hn, model, blocks.float())
