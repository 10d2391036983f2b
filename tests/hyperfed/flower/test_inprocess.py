"""The Flower path end to end on the in-process grid: real messages, real ClientApps."""

from __future__ import annotations

import json
import re

import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from hyperfed.config import RunConfig
from hyperfed.federation import evaluate_all_splits, make_server, poisson_sample, run_rounds
from hyperfed.flower import keys, run_inprocess
from hyperfed.flower.cache import build_peft_model, cached_corpus
from hyperfed.flower.client_app import app as real_app
from hyperfed.flower.client_app import client_identity
from hyperfed.flower.records import adapter_to_record, record_to_adapter


def _wrap(on_train) -> ClientApp:
    """A ClientApp that behaves like the real one except for ``on_train(message, context)``."""
    wrapped = ClientApp()
    wrapped.query()(real_app)
    wrapped.evaluate()(real_app)
    wrapped.train()(on_train)
    return wrapped


def _corpus_ids(run_config) -> list[str]:
    return cached_corpus(RunConfig.from_run_config(run_config).corpus).client_ids


def test_each_client_receives_its_own_adapter(tiny_run_config):
    received: dict[tuple[int, str], dict[str, torch.Tensor]] = {}

    def recording(message: Message, context: Context) -> Message:
        own_id = client_identity(context, RunConfig.from_run_config(context.run_config))
        received[int(message.content["config"][keys.SERVER_ROUND]), own_id] = record_to_adapter(
            message.content[keys.ARRAYS]
        )
        return real_app(message, context)

    run = run_inprocess(tiny_run_config, client_apps=_wrap(recording))
    ids = sorted(run.history.clients)
    assert len(ids) == 4 and {cid for _, cid in received} == set(ids)
    # Round 1: node of client c got exactly what a fresh server generates for c ...
    config = run.config
    fresh = make_server(
        "hyperlora", build_peft_model(config.base_model, config.federation.lora_rank), config.federation
    )
    fresh.register(ids)
    generated = fresh.adapters_for(ids)  # one batched generation, as the server does it
    for cid in ids:
        expected = generated[cid]
        assert all(torch.equal(received[1, cid][k], expected[k]) for k in expected), cid
    # ... and in every round, no two clients got the same adapter.
    for round_ in (1, 2):
        for a in ids:
            for b in ids:
                if a < b:
                    assert any(
                        not torch.equal(received[round_, a][k], received[round_, b][k]) for k in received[round_, a]
                    )


def test_only_sampled_clients_embeddings_change(tiny_run_config):
    ids = _corpus_ids(tiny_run_config)
    rate, rounds = 0.5, 2
    # The first seed where some client sits out every round and some take part.
    seed = next(
        s for s in range(100) if 0 < len({c for r in (1, 2) for c in poisson_sample(s, r, ids, rate)}) < len(ids)
    )
    run = run_inprocess({**tiny_run_config, "sample-rate": rate, "rounds": rounds, "seed": seed})
    assert run.history.sampled == {r: poisson_sample(seed, r, ids, rate) for r in range(1, rounds + 1)}
    fresh = make_server("hyperlora", build_peft_model(run.config.base_model, 4), run.config.federation)
    fresh.register(ids)  # embeddings start from a function of (seed, client id)
    for cid in ids:
        sampled = any(cid in run.history.sampled[r] for r in range(1, rounds + 1))
        changed = not torch.equal(run.server.hypernet.clients.parameter(cid), fresh.hypernet.clients.parameter(cid))
        assert changed == sampled, cid


@pytest.mark.parametrize("method", ["hyperlora", "fedavg", "local"])
def test_two_rounds_lower_mean_eval_loss(tiny_run_config, method):
    # An untrained base model (steps 0) leaves LoRA plenty to learn in 2 rounds, so the
    # drop is far above noise; the 50-step base moves by ~1e-3 nats only.
    run_config = {**tiny_run_config, "method": method, "base-model-steps": 0, "local-steps": 5, "local-lr": 1e-2}
    history = run_inprocess(run_config).history
    assert sorted(history.eval_losses) == [0, 1, 2] and len(history.eval_losses[2]) == 4
    assert history.mean_eval_loss(1) < history.mean_eval_loss(0)
    assert history.mean_eval_loss(2) < history.mean_eval_loss(0) - 0.05
    assert all(not outcome.rejected for outcome in history.rounds)


def _corrupt_adapter(change):
    def on_train(message: Message, context: Context) -> Message:
        reply = real_app(message, context)
        adapter = record_to_adapter(reply.content[keys.ARRAYS])
        change(adapter)
        content = RecordDict({keys.ARRAYS: adapter_to_record(adapter), keys.METRICS: reply.content[keys.METRICS]})
        return Message(content, reply_to=message)

    return on_train


def _first(adapter):
    return next(iter(adapter))


def _replace_content(content_of):
    def on_train(message: Message, context: Context) -> Message:
        return Message(content_of(real_app(message, context)), reply_to=message)

    return on_train


def _raise(message: Message, context: Context) -> Message:
    raise RuntimeError("disk full")


BAD_CLIENTS = {
    "nan": (_corrupt_adapter(lambda a: a[_first(a)].view(-1).__setitem__(0, float("nan"))), "NaN or inf"),
    "wrong shape": (_corrupt_adapter(lambda a: a.__setitem__(_first(a), torch.zeros(3, 3))), "shape"),
    "huge norm": (_corrupt_adapter(lambda a: a.__setitem__(_first(a), a[_first(a)] + 1e4)), "update norm"),
    "wrong keys": (
        _corrupt_adapter(lambda a: a.__setitem__("unexpected.lora_A.weight", a.pop(_first(a)))),
        "wrong keys",
    ),
    "undecodable arrays": (
        _replace_content(
            lambda r: RecordDict(
                {
                    keys.ARRAYS: ArrayRecord(
                        {"k": Array(dtype="float32", shape=(4,), stype="numpy.ndarray", data=b"not numpy")}
                    ),
                    keys.METRICS: r.content[keys.METRICS],
                }
            )
        ),
        "cannot decode",
    ),
    "no metrics": (_replace_content(lambda r: RecordDict({keys.ARRAYS: r.content[keys.ARRAYS]})), "no MetricRecord"),
    "fractional num-examples": (
        _replace_content(
            lambda r: RecordDict(
                {keys.ARRAYS: r.content[keys.ARRAYS], keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 2.5})}
            )
        ),
        "num_examples",
    ),
    "client raises": (_raise, "reported an error.*disk full"),
}


@pytest.mark.parametrize("kind", sorted(BAD_CLIENTS))
def test_malformed_replies_are_rejected_and_the_round_goes_on(tiny_run_config, kind, caplog):
    on_train, reason = BAD_CLIENTS[kind]
    ids = _corpus_ids(tiny_run_config)
    apps = [_wrap(on_train)] + [real_app] * (len(ids) - 1)  # node 0 (partition 0) is the bad client
    run = run_inprocess({**tiny_run_config, "rounds": 1, "evaluate-every": 0}, client_apps=apps)
    [outcome] = run.history.rounds
    assert list(outcome.rejected) == [ids[0]]
    assert re.search(reason, outcome.rejected[ids[0]])
    assert outcome.accepted == sorted(ids[1:])
    assert any(ids[0] in record.getMessage() and "rejected" in record.getMessage() for record in caplog.records)
    assert sorted(run.history.eval_losses) == [0, 1]  # evaluate-every 0: before and after training
    assert len(run.history.eval_losses[1]) == len(ids)  # the run went on to evaluate everyone


def test_client_ids_map_to_the_same_embeddings_across_runs(tiny_run_config):
    ids = _corpus_ids(tiny_run_config)
    run_config = {**tiny_run_config, "rounds": 2}
    one = run_inprocess(run_config, client_ids=ids)
    two = run_inprocess(run_config, client_ids=list(reversed(ids)), serialize=False)
    assert one.history.clients.keys() == two.history.clients.keys()
    assert set(one.history.clients.values()) == set(two.history.clients.values())  # same run id → same node ids …
    assert one.history.clients != two.history.clients  # … but handed to different clients
    for cid in ids:
        assert torch.equal(one.server.hypernet.clients.parameter(cid), two.server.hypernet.clients.parameter(cid))
    state_one, state_two = one.server.hypernet.state_dict(), two.server.hypernet.state_dict()
    assert all(torch.equal(state_one[k], state_two[k]) for k in state_one)


@pytest.mark.parametrize("method", ["hyperlora", "fedavg", "local", "fedsa", "fedavg_ft"])
def test_flower_path_equals_the_plain_loop_bit_for_bit(tiny_run_config, method):
    run_config = {**tiny_run_config, "method": method, "rounds": 3, "sample-rate": 0.6}
    flower = run_inprocess(run_config)
    config = RunConfig.from_run_config(run_config)
    model = build_peft_model(config.base_model, config.federation.lora_rank)
    plain = make_server(method, model, config.federation)
    clients = cached_corpus(config.corpus).clients
    outcomes = run_rounds(plain, model, dict(sorted(clients.items())), config.federation)
    assert [o.accepted for o in outcomes] == [o.accepted for o in flower.history.rounds]
    for cid in clients:
        mine, theirs = flower.server.adapter_for(cid), plain.adapter_for(cid)
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), cid
    # the clients' federated evaluation (val, test, fine-tuning chosen on val) = the plain one
    evaluations = evaluate_all_splits(plain, model, clients, config.federation, 3)
    assert flower.history.eval_losses[3] == pytest.approx({c: e.val for c, e in evaluations.items()}, abs=1e-6)
    assert flower.history.test_losses[3] == pytest.approx({c: e.test for c, e in evaluations.items()}, abs=1e-6)
    assert flower.history.finetune_steps[3] == {c: e.finetune_steps for c, e in evaluations.items()}
    if method == "hyperlora":
        mine, theirs = flower.server.hypernet.state_dict(), plain.hypernet.state_dict()
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_run_dir_gets_metrics_json(tiny_run_config, tmp_path):
    run = run_inprocess({**tiny_run_config, "run-dir": str(tmp_path), "sample-rate": 0.5, "seed": 1})
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["method"] == "hyperlora" and metrics["config"]["run-dir"] == str(tmp_path)
    assert metrics["clients"] == run.history.clients
    assert [r["round"] for r in metrics["rounds"]] == [1, 2] and all(r["seconds"] > 0 for r in metrics["rounds"])
    assert set(metrics["eval_losses"]) == {"0", "1", "2"} and len(metrics["eval_losses"]["2"]) == 4


def test_a_client_without_data_is_rejected_but_the_run_goes_on(tiny_run_config, caplog):
    ids = _corpus_ids(tiny_run_config)
    run = run_inprocess({**tiny_run_config, "rounds": 1}, client_ids=[*ids[:2], "nobody/here"])
    assert sorted(run.history.clients) == sorted(ids[:2]) + ["nobody/here"]
    [outcome] = run.history.rounds
    assert "nobody/here" in outcome.rejected and "UnknownClientError" in outcome.rejected["nobody/here"]
    assert outcome.accepted == sorted(ids[:2])
