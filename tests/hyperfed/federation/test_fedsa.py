"""FedSA-LoRA: A matrices averaged over the replies, B matrices kept per client."""

from __future__ import annotations

import torch

from hyperfed.federation import FederationConfig, Reply, evaluate_all_splits, make_server, run_rounds
from hyperfed.federation.fedsa import FedSALoRAServer, is_shared_key
from hypernet import LocalTrainConfig


def _config(**kw) -> FederationConfig:
    return FederationConfig(method="fedsa", rounds=2, lora_rank=2, local=LocalTrainConfig(steps=2, batch_size=2), **kw)


def test_a_is_the_weighted_mean_and_b_stays_with_its_client(tiny_peft):
    server = make_server("fedsa", tiny_peft, _config())
    assert isinstance(server, FedSALoRAServer)
    sent = server.configure_round(1, ["x", "y"])
    a_keys = [k for k in sent["x"] if is_shared_key(k)]
    b_keys = [k for k in sent["x"] if not is_shared_key(k)]
    assert a_keys and b_keys and all(".lora_B." in k for k in b_keys)
    bump = {"x": 0.01, "y": 0.04}
    replies = {c: Reply({k: v + bump[c] for k, v in sent[c].items()}, num_examples=n) for c, n in (("x", 1), ("y", 3))}
    outcome = server.aggregate_round(1, replies)
    assert outcome.accepted == ["x", "y"]
    for k in a_keys:  # (1 × 0.01 + 3 × 0.04) / 4 = 0.0325
        torch.testing.assert_close(server.adapter_for("x")[k], sent["x"][k] + 0.0325)
        torch.testing.assert_close(server.adapter_for("z")[k], sent["x"][k] + 0.0325)  # everyone gets the shared A
    for k in b_keys:
        torch.testing.assert_close(server.adapter_for("x")[k], sent["x"][k] + 0.01)
        torch.testing.assert_close(server.adapter_for("y")[k], sent["y"][k] + 0.04)
        assert torch.equal(server.adapter_for("z")[k], torch.zeros_like(sent["x"][k]))  # peft's initial B


def test_a_short_run_personalises_b_and_reports_val_and_test(tiny_peft, tiny_corpus):
    config = _config()
    server = make_server("fedsa", tiny_peft, config)
    run_rounds(server, tiny_peft, tiny_corpus.clients, config)
    ids = sorted(tiny_corpus.clients)
    b_key = next(k for k in server.adapter_for(ids[0]) if not is_shared_key(k))
    assert not torch.equal(server.adapter_for(ids[0])[b_key], server.adapter_for(ids[1])[b_key])
    evaluations = evaluate_all_splits(server, tiny_peft, tiny_corpus.clients, config)
    assert all(e.test is not None and e.finetune_steps == 0 for e in evaluations.values())
