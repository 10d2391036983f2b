"""FedAvg-LoRA + local fine-tuning: FedAvg's server, fine-tuning chosen on validation only."""

from __future__ import annotations

import torch

from hyperfed.federation import METHODS, Evaluation, FederationConfig, Reply, client_side, evaluate_splits, make_server
from hypernet import LocalTrainConfig


def _config() -> FederationConfig:
    return FederationConfig(method="fedavg_ft", rounds=1, lora_rank=2, local=LocalTrainConfig(steps=2, batch_size=2))


def test_training_is_fedavg(tiny_peft):
    ft, plain = make_server("fedavg_ft", tiny_peft, _config()), make_server("fedavg", tiny_peft, _config())
    for server in (ft, plain):
        sent = server.configure_round(1, ["x", "y"])
        server.aggregate_round(
            1, {c: Reply({k: v + d for k, v in sent[c].items()}, 1) for c, d in (("x", 0.1), ("y", 0.3))}
        )
    assert ft.method == "fedavg_ft" and ft.published_adapter() is not None
    assert all(torch.allclose(ft.adapter_for("x")[k], plain.adapter_for("x")[k]) for k in plain.adapter_for("x"))


def test_the_fine_tuning_steps_are_chosen_by_validation_loss_alone(tiny_peft, tiny_corpus, monkeypatch):
    grid = METHODS["fedavg_ft"].finetune_steps
    assert len(grid) > 1 and 0 in grid
    measured: list[Evaluation] = []
    # fake measurements where validation and test disagree: the choice must follow validation
    fake_val = {0: 2.0, 10: 1.5, 20: 1.7}

    def fake_measure(model, adapter, data, steps):
        measured.append(Evaluation(fake_val[steps], test=10.0 - fake_val[steps], finetune_steps=steps))
        return measured[-1]

    monkeypatch.setattr(client_side, "_measure", fake_measure)
    server = make_server("fedavg_ft", tiny_peft, _config())
    cid, data = next(iter(tiny_corpus.clients.items()))
    chosen = evaluate_splits(tiny_peft, server.adapter_for(cid), data, _config(), 1, cid)
    assert [m.finetune_steps for m in measured] == sorted(grid)
    assert chosen == Evaluation(1.5, 8.5, 10)


def test_fine_tuning_uses_train_blocks_only_and_can_only_lower_validation_loss(tiny_peft, tiny_corpus):
    server = make_server("fedavg_ft", tiny_peft, _config())
    cid, data = next(iter(tiny_corpus.clients.items()))
    adapter = server.adapter_for(cid)
    as_received = evaluate_splits(tiny_peft, adapter, data)  # no config: no fine-tuning
    tuned = evaluate_splits(tiny_peft, adapter, data, _config(), 1, cid)
    assert tuned.val <= as_received.val and tuned.finetune_steps in METHODS["fedavg_ft"].finetune_steps
    poisoned = type(data)(train=data.train, val=data.val, test=torch.zeros_like(data.test))  # test text changes nothing
    again = evaluate_splits(tiny_peft, adapter, poisoned, _config(), 1, cid)
    assert again.val == tuned.val and again.finetune_steps == tuned.finetune_steps
