"""The stronger recovery attack: embedding + residual + canary prefixes, on a planted-canary toy run."""

from __future__ import annotations

import pytest
import torch

from hyperfed.unlearning import (
    adapter_from_embedding,
    embedding_recovery_attack,
    make_canaries,
    mean_exposure,
    plant_canaries,
)
from hyperfed.unlearning.strong_attack import add_residual, residual_recovery_attack, zero_residual
from hypernet import ClientData, ConfigError, HyperLoRA, HypernetTrainer, TrainerConfig
from hypernet.base_models import add_lora, tiny_llama


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _cyclic_client(seed: int, n_blocks: int = 40, block: int = 64) -> ClientData:
    g = torch.Generator().manual_seed(seed)
    alphabet = torch.randperm(256, generator=g)[:8]
    start = torch.randint(0, 8, (n_blocks,), generator=g)
    blocks = alphabet[(start[:, None] + torch.arange(block)) % 8]  # (n_blocks, block)
    return ClientData(train=blocks[:32], val=blocks[32:])


@pytest.fixture(scope="module")
def system():
    """4 clients, 2 canaries × 4 copies planted in client-0, trained briefly (partly memorised), then deleted."""
    model = add_lora(tiny_llama(hidden_size=64, num_layers=2), rank=4)
    canaries = make_canaries(2, seed=0)
    data = {f"client-{i}": _cyclic_client(i) for i in range(4)}
    data["client-0"] = plant_canaries(data["client-0"], canaries, copies=4, seed=0)
    hn = HyperLoRA.from_peft_model(model, client_ids=list(data))
    HypernetTrainer(hn, model, TrainerConfig(lr=3e-3, clients_per_step=4)).fit(data, steps=30)
    hn.remove_client("client-0")
    return {"model": model, "hn": hn, "data": data, "canaries": canaries}


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    state.update({f"{n}.grad": torch.tensor(p.grad is None) for n, p in module.named_parameters()})
    return state


def test_strong_attack_recovers_at_least_as_much_as_the_embedding_attack(system):
    hn, model, canaries = system["hn"], system["model"], system["canaries"]
    val = system["data"]["client-0"].val  # the attacker's text: no canary in it

    def exposure(adapter: dict[str, torch.Tensor]) -> float:
        return mean_exposure(model, adapter, canaries, 1000, seed=0)

    first = exposure(adapter_from_embedding(hn, embedding_recovery_attack(hn, model, val, steps=30, lr=3e-2)))
    prefixes = [c.format.prefix for c in canaries]
    strong = exposure(residual_recovery_attack(hn, model, val, prefixes, steps=30, lr=3e-2))
    assert strong >= first, (first, strong)
    assert strong > mean_exposure(model, None, canaries, 1000, seed=0) + 1.0  # well above the base model


def test_strong_attack_never_touches_the_hypernetwork_or_the_remaining_clients(system):
    hn, model = system["hn"], system["model"]
    before_hn, before_model, ids = _state(hn), _state(model), hn.client_ids
    embeddings = {c: hn.clients.parameter(c).detach().clone() for c in ids}
    first = residual_recovery_attack(hn, model, system["data"]["client-0"].val, ["the secret code is "], steps=3)
    again = residual_recovery_attack(hn, model, system["data"]["client-0"].val, ["the secret code is "], steps=3)
    for ref, now in ((before_hn, _state(hn)), (before_model, _state(model))):
        assert ref.keys() == now.keys() and all(torch.equal(ref[k], now[k]) for k in ref)
    assert hn.client_ids == ids and all(torch.equal(hn.clients.parameter(c), e) for c, e in embeddings.items())
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)  # seeded
    assert all(not v.requires_grad for v in first.values())


def test_residual_helpers_and_bad_inputs(system):
    hn, model, val = system["hn"], system["model"], system["data"]["client-0"].val
    adapter = {"a": torch.ones(2, 3)}
    residual = zero_residual(adapter)
    assert residual["a"].requires_grad and torch.equal(add_residual(adapter, residual)["a"], adapter["a"])
    with pytest.raises(ConfigError):
        add_residual(adapter, {"b": torch.zeros(2, 3)})
    with pytest.raises(ConfigError):
        residual_recovery_attack(hn, model, val, steps=-1)
    with pytest.raises(ConfigError):
        residual_recovery_attack(hn, model, val.float())
    with pytest.raises(ConfigError):
        residual_recovery_attack(hn, model, val, ["x"])  # a 1-token prefix predicts nothing
