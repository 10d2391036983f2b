import pytest
import torch
from safetensors.torch import load, save

from hypernet import (
    CheckpointMismatchError,
    ClientData,
    CorruptFileError,
    HyperLoRA,
    HypernetTrainer,
    LocalTrainConfig,
    TrainerConfig,
    load_hypernet,
    save_hypernet,
    train_local_adapter,
)
from hypernet.trainer_state import client_of_key


def _trainer(model, ids, **cfg):
    hn = HyperLoRA.from_peft_model(model, client_ids=list(ids))
    return HypernetTrainer(hn, model, TrainerConfig(**{"lr": 3e-3, "clients_per_step": 2, "batch_size": 4, **cfg}))


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_state_dict_round_trip_resumes_end_to_end_training_bitwise(llama_model, toy_data, tmp_path):
    straight = _trainer(llama_model, toy_data)
    full = straight.fit(toy_data, steps=6)

    first = _trainer(llama_model, toy_data)
    first.fit(toy_data, steps=3)
    save_hypernet(first.hypernet, tmp_path / "ckpt")
    state = load(save(first.state_dict()))  # through the safetensors bytes, as on disk
    resumed = HypernetTrainer(load_hypernet(tmp_path / "ckpt"), llama_model, first.config)
    resumed.load_state_dict(state)
    rest = resumed.fit(toy_data, steps=3)

    assert [r["step"] for r in rest] == [4, 5, 6]
    assert [r["loss"] for r in rest] == [r["loss"] for r in full[3:]]
    assert _same_weights(straight.hypernet, resumed.hypernet)


def test_without_the_state_a_resumed_run_differs(llama_model, toy_data, tmp_path):
    straight = _trainer(llama_model, toy_data)
    straight.fit(toy_data, steps=4)
    first = _trainer(llama_model, toy_data)
    first.fit(toy_data, steps=2)
    save_hypernet(first.hypernet, tmp_path / "ckpt")
    cold = HypernetTrainer(load_hypernet(tmp_path / "ckpt"), llama_model, first.config)
    cold.fit(toy_data, steps=2)  # fresh Adam moments and sampler
    assert not _same_weights(straight.hypernet, cold.hypernet)


def test_key_layout_covers_every_optimizer_and_the_trainer(llama_model, toy_data):
    trainer = _trainer(llama_model, toy_data, optimizer="sgd", base_lr=1.0, clients_per_step=4)
    trainer.fit(toy_data, steps=1)
    state = trainer.state_dict()
    owners = {k.split("/", 1)[0] for k in state}
    assert owners == {"shared", "client", "trainer"}  # the base adapters' plain SGD keeps no state
    assert {f"client/{c}/momentum_buffer" for c in toy_data} <= set(state)
    assert "shared/trunk.0.weight/momentum_buffer" in state
    assert not any(".base/" in k for k in state)  # base adapters are not in the shared optimizer
    assert int(state["trainer/step_count"]) == 1
    assert all(v.device.type == "cpu" for v in state.values())
    assert HypernetTrainer.clients_in_state(state) == set(toy_data)


def test_pfedhn_resume_from_state_is_bitwise(llama_model, toy_data):
    ids = list(toy_data)

    def one_round(trainer, rnd):
        with torch.no_grad():
            sent = {c: {k: v.clone() for k, v in trainer.hypernet.generate(c).items()} for c in ids}
        returned = {
            c: train_local_adapter(llama_model, sent[c], toy_data[c].train, LocalTrainConfig(steps=2, seed=rnd))[0]
            for c in ids
        }
        trainer.apply_client_updates(returned, sent)

    straight, first = _trainer(llama_model, ids, base_lr=1.0), _trainer(llama_model, ids, base_lr=1.0)
    for rnd in range(2):
        one_round(straight, rnd)
    one_round(first, 0)
    resumed = HypernetTrainer(HyperLoRA.from_peft_model(llama_model), llama_model, first.config)
    resumed.hypernet.load_state_dict(first.hypernet.state_dict(), strict=False)
    for cid in ids:
        resumed.add_client(cid, first.hypernet.client_parameter(cid).detach())
    resumed.load_state_dict(first.state_dict())
    one_round(resumed, 1)
    assert _same_weights(straight.hypernet, resumed.hypernet)


def test_removing_a_client_state_deletes_exactly_its_entries(llama_model):
    data_ids = ["a", "a/1", "b"]  # "a" is a prefix of "a/1": removal must match the id exactly
    trainer = _trainer(llama_model, data_ids, clients_per_step=3)
    g = torch.Generator().manual_seed(0)
    data = {
        c: ClientData(torch.randint(0, 256, (4, 16), generator=g), torch.randint(0, 256, (2, 16), generator=g))
        for c in data_ids
    }
    trainer.fit(data, steps=1)
    state = trainer.state_dict()
    kept = HypernetTrainer.remove_client_state(state, "a")
    removed = set(state) - set(kept)
    assert removed == {"client/a/step", "client/a/exp_avg", "client/a/exp_avg_sq"}
    assert {client_of_key(k) for k in removed} == {"a"}
    assert {"client/a/1/exp_avg", "client/b/exp_avg"} <= set(kept)
    assert HypernetTrainer.clients_in_state(kept) == {"a/1", "b"}
    assert all(kept[k] is state[k] for k in kept)


def test_load_skips_clients_the_generator_no_longer_holds(llama_model, toy_data):
    trainer = _trainer(llama_model, toy_data, clients_per_step=4)
    trainer.fit(toy_data, steps=1)
    state = trainer.state_dict()
    trainer.remove_client("client-0")
    trainer.load_state_dict(state)  # the forgotten client's entries are ignored
    assert len(trainer.client_optimizer.state) == 3
    assert HypernetTrainer.clients_in_state(trainer.state_dict()) == set(toy_data) - {"client-0"}


def test_load_refuses_unknown_parameters_and_wrong_shapes(llama_model, toy_data):
    trainer = _trainer(llama_model, toy_data, clients_per_step=4)
    trainer.fit(toy_data, steps=1)
    state = trainer.state_dict()
    with pytest.raises(CorruptFileError, match="unknown parameter"):
        trainer.load_state_dict({"shared/no.such.weight/exp_avg": torch.zeros(1)})
    with pytest.raises(CorruptFileError, match="not <group>"):
        trainer.load_state_dict({"loose": torch.zeros(1)})
    key = next(k for k in state if k.startswith("client/") and k.endswith("/exp_avg"))
    with pytest.raises(CheckpointMismatchError, match="shape"):
        trainer.load_state_dict({key: torch.zeros(3)})
