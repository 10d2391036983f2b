import pytest
import torch

from hypernet import (
    ConfigError,
    HyperLoRA,
    HypernetTrainer,
    LocalTrainConfig,
    MalformedUpdateError,
    TrainerConfig,
    evaluate_loss,
    train_local_adapter,
    validate_adapter,
)


def _trainer(model, data, **cfg):
    hn = HyperLoRA.from_peft_model(model, client_ids=list(data))
    return HypernetTrainer(hn, model, TrainerConfig(**{"lr": 3e-3, **cfg}))


def test_end_to_end_fit_lowers_every_clients_validation_loss(llama_model, toy_data):
    trainer = _trainer(llama_model, toy_data)
    before = trainer.evaluate(toy_data)
    history = trainer.fit(toy_data, steps=40, eval_every=20)
    after = trainer.evaluate(toy_data)
    assert len(history) == 40 and "val_loss" in history[19] and "val_loss" in history[-1]
    for cid in toy_data:
        assert after[cid] < before[cid] - 0.5, (cid, before[cid], after[cid])


def test_generated_adapters_are_personalised(llama_model, toy_data):
    trainer = _trainer(llama_model, toy_data)
    trainer.fit(toy_data, steps=80)
    with torch.no_grad():
        adapters = trainer.hypernet.generate_many(list(toy_data))
    own = {c: evaluate_loss(llama_model, adapters[c], toy_data[c].val) for c in toy_data}
    ids = list(toy_data)
    swapped = {
        c: evaluate_loss(llama_model, adapters[ids[(i + 1) % len(ids)]], toy_data[c].val) for i, c in enumerate(ids)
    }
    assert sum(own.values()) < sum(swapped.values()) - 0.1 * len(ids)


def test_only_sampled_clients_embeddings_move(llama_model, toy_data):
    trainer = _trainer(llama_model, toy_data, clients_per_step=1)
    before = {c: trainer.hypernet.clients.parameter(c).detach().clone() for c in toy_data}
    trainer.fit(toy_data, steps=3)  # the first step only moves the B head (B starts at 0)
    moved = {c for c in toy_data if not torch.equal(before[c], trainer.hypernet.clients.parameter(c))}
    assert 1 <= len(moved) <= 2


def test_remove_client_deletes_embedding_and_optimizer_state(llama_model, toy_data):
    trainer = _trainer(llama_model, toy_data, clients_per_step=4)
    trainer.fit(toy_data, steps=3)
    assert trainer.client_optimizer_state("client-1")  # Adam moments exist
    param = trainer.hypernet.clients.parameter("client-1")
    trainer.remove_client("client-1")
    assert "client-1" not in trainer.hypernet.clients
    assert param not in trainer.client_optimizer.state
    assert all(p is not param for p in trainer.client_optimizer.param_groups[0]["params"])
    assert len(trainer.client_optimizer.state) == 3
    trainer.fit({c: d for c, d in toy_data.items() if c != "client-1"}, steps=2)  # still trains
    trainer.add_client("newcomer")
    assert "newcomer" in trainer.hypernet.client_ids


def test_pfedhn_updates_from_locally_trained_adapters_lower_loss(llama_model, toy_data):
    trainer = _trainer(llama_model, toy_data, lr=5e-3, embedding_lr=5e-3)
    ids = list(toy_data)
    before = trainer.evaluate(toy_data)
    for rnd in range(6):
        with torch.no_grad():
            sent = {c: {k: v.detach().clone() for k, v in trainer.hypernet.generate(c).items()} for c in ids}
        returned = {}
        for c in ids:
            returned[c], _ = train_local_adapter(
                llama_model, sent[c], toy_data[c].train, LocalTrainConfig(steps=5, lr=1e-2, seed=rnd)
            )
            validate_adapter(trainer.hypernet.spec, returned[c], sent[c], max_update_norm=100.0)
        norms = trainer.apply_client_updates(returned, sent)
        assert set(norms) == set(ids) and all(n > 0 for n in norms.values())
    after = trainer.evaluate(toy_data)
    assert sum(after.values()) / len(ids) < sum(before.values()) / len(ids) - 0.2


def test_validate_adapter_rejects_malformed_updates(llama_model):
    hn = HyperLoRA.from_peft_model(llama_model, client_ids=["a"])
    with torch.no_grad():
        good = {k: v.clone() for k, v in hn.generate("a").items()}
    validate_adapter(hn.spec, good)
    key = next(iter(good))
    cases = {
        "wrong keys": {**{k: v for k, v in good.items() if k != key}},
        "shape": {**good, key: torch.zeros(1, 1)},
        "NaN": {**good, key: good[key].clone().fill_(float("nan"))},
        "dtype": {**good, key: good[key].long()},
    }
    for match, bad in cases.items():
        with pytest.raises(MalformedUpdateError, match=match):
            validate_adapter(hn.spec, bad)
    with pytest.raises(MalformedUpdateError, match="norm"):
        validate_adapter(hn.spec, {**good, key: good[key] + 100}, sent=good, max_update_norm=1.0)


def test_trainer_config_is_validated():
    with pytest.raises(ConfigError, match="optimizer"):
        TrainerConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match="lr"):
        TrainerConfig(lr=0)
