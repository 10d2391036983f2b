"""Garbage over Flower: reply records the server cannot use are rejected, never raised.

A train reply's content is built from a valid reply around a real server's sent adapter,
then broken in zero or more ways (arrays of dtypes the server cannot compute with such as
float8, integers, bool, complex; undecodable bytes; unknown encodings; wrong keys or
shapes; metrics of the wrong type or range; missing records). The verdict comes from how
the content was built. Decoding (:func:`content_to_reply`) plus screening must give exactly
that verdict and raise nothing but :class:`MalformedReplyError`; and the strategy's
``aggregate_train`` turns every garbage message into a rejection while learning from the
good ones exactly as if the garbage had not been sent.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hyperfed.federation import FederationConfig, Reply, make_server, screen_replies
from hyperfed.flower import keys
from hyperfed.flower import strategy as strategy_module
from hyperfed.flower.errors import MalformedReplyError
from hyperfed.flower.inprocess import InProcessGrid, wire_roundtrip
from hyperfed.flower.records import RAW_STYPE, adapter_to_record, content_to_reply, reply_to_content
from hyperfed.flower.strategy import AdapterStrategy
from hypernet.base_models import add_lora, tiny_llama

BOUND = 5.0
FLOAT8 = [torch.float8_e4m3fn, torch.float8_e5m2]


def _peft():
    return add_lora(tiny_llama(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1), rank=2)


@pytest.fixture(scope="module")
def server():
    return make_server("hyperlora", _peft(), FederationConfig(max_update_norm=BOUND))


@pytest.fixture(scope="module")
def sent(server):
    return server.configure_round(1, ["c"])


def _valid_adapter(sent_adapter, seed: int, dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: (v + 0.01 * torch.randn(v.shape, generator=gen)).to(dtype) for k, v in sent_adapter.items()}


def _encoded(tensor: torch.Tensor) -> Array:
    return adapter_to_record({"k": tensor})["k"]


# name → (record, key) → replaces record[key] with an array the server must not accept
ARRAY_MUTATIONS = {
    **{f"dtype-{d}".replace("torch.", ""): (lambda t, d=d: _encoded(t.to(d))) for d in FLOAT8},
    **{
        f"dtype-{d}".replace("torch.", ""): (lambda t, d=d: _encoded(t.to(d)))
        for d in (torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64)
    },
    "raw-float8-by-hand": lambda t: Array(
        dtype="float8_e4m3fn", shape=tuple(t.shape), stype=RAW_STYPE, data=bytes(t.numel())
    ),
    "raw-unknown-dtype": lambda t: Array(dtype="nope", shape=tuple(t.shape), stype=RAW_STYPE, data=b"1234"),
    "raw-not-a-dtype": lambda t: Array(dtype="Tensor", shape=tuple(t.shape), stype=RAW_STYPE, data=b"1234"),
    "raw-qint8": lambda t: Array(dtype="qint8", shape=tuple(t.shape), stype=RAW_STYPE, data=bytes(t.numel())),
    "raw-short": lambda t: Array(dtype="bfloat16", shape=tuple(t.shape), stype=RAW_STYPE, data=b"\x00" * 3),
    "raw-empty": lambda t: Array(dtype="float32", shape=(0,), stype=RAW_STYPE, data=b""),
    "raw-transposed": lambda t: Array(
        dtype="bfloat16", shape=tuple(reversed(t.shape)), stype=RAW_STYPE, data=bytes(2 * t.numel())
    ),
    "numpy-garbage": lambda t: Array(dtype="float32", shape=tuple(t.shape), stype="numpy.ndarray", data=b"garbage!"),
    "numpy-truncated": lambda t: Array(
        dtype="float32", shape=tuple(t.shape), stype="numpy.ndarray", data=_encoded(t.float()).data[:-5]
    ),
    "unknown-stype": lambda t: Array(dtype="float32", shape=tuple(t.shape), stype="pickle", data=b"\x80\x04N."),
    "numpy-nan": lambda t: Array(np.full(tuple(t.shape), np.nan, dtype=np.float32)),
    "numpy-flat": lambda t: Array(np.zeros(t.numel(), dtype=np.float32)),
}
CONTENT_MUTATIONS = {
    "drop-key": lambda c: c[keys.ARRAYS].__delitem__(next(iter(c[keys.ARRAYS]))),
    "extra-key": lambda c: c[keys.ARRAYS].__setitem__("extra.lora_A.weight", Array(np.zeros(2, dtype=np.float32))),
    "no-arrays": lambda c: c.__delitem__(keys.ARRAYS),
    "no-metrics": lambda c: c.__delitem__(keys.METRICS),
    "no-num-examples": lambda c: c[keys.METRICS].__delitem__(keys.NUM_EXAMPLES),
    "num-examples-float": lambda c: c[keys.METRICS].__setitem__(keys.NUM_EXAMPLES, 2.5),
    "num-examples-list": lambda c: c[keys.METRICS].__setitem__(keys.NUM_EXAMPLES, [1, 2]),
    "num-examples-zero": lambda c: c[keys.METRICS].__setitem__(keys.NUM_EXAMPLES, 0),
    "num-examples-2**40": lambda c: c[keys.METRICS].__setitem__(keys.NUM_EXAMPLES, 2**40),
    "train-loss-list": lambda c: c[keys.METRICS].__setitem__(keys.TRAIN_LOSS, [1.0, 2.0]),
    "train-loss-inf": lambda c: c[keys.METRICS].__setitem__(keys.TRAIN_LOSS, math.inf),
}
#: changes a valid reply may have
VALID_VARIATIONS = {
    "train-loss-missing": lambda c: c[keys.METRICS].__delitem__(keys.TRAIN_LOSS),
    "train-loss-int": lambda c: c[keys.METRICS].__setitem__(keys.TRAIN_LOSS, 3),
    "train-loss-nan": lambda c: c[keys.METRICS].__setitem__(keys.TRAIN_LOSS, math.nan),
}


def build_content(sent_adapter, seed, dtype, array_mutations, content_mutations, variations):
    """``(content, valid)``: a valid reply's content, then broken by the named mutations."""
    rng = np.random.default_rng(seed)
    adapter = _valid_adapter(sent_adapter, seed, dtype)
    content = reply_to_content(Reply(adapter, int(rng.integers(1, 100)), float(rng.random())))
    names = list(adapter)
    for name in array_mutations:
        key = names[rng.integers(len(names))]
        content[keys.ARRAYS][key] = ARRAY_MUTATIONS[name](adapter[key])
    for name in variations:
        VALID_VARIATIONS[name](content)
    for name in content_mutations:
        if name.startswith(("num-examples", "train-loss")) and keys.METRICS not in content:
            continue
        if name in ("drop-key", "extra-key") and keys.ARRAYS not in content:
            continue
        if name == "no-num-examples" and keys.NUM_EXAMPLES not in content.get(keys.METRICS, {}):
            continue
        CONTENT_MUTATIONS[name](content)
    return content, not array_mutations and not content_mutations


def verdict(content, server, sent) -> tuple[bool, str]:
    """Decoded and screened as the strategy does; anything but MalformedReplyError propagates."""
    try:
        reply = content_to_reply(content)
    except MalformedReplyError as exc:
        return False, str(exc)
    accepted, rejected = screen_replies(server.spec, sent, {"c": reply}, BOUND)
    return "c" in accepted, rejected.get("c", "")


def _sorted_unique(pool):
    return st.lists(st.sampled_from(sorted(pool)), max_size=2, unique=True).map(tuple)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fuzzed_reply_records_are_rejected_exactly_when_broken(server, sent):
    InProcessGrid([], [], {})  # Flower's TaskIdentity, to build messages for the wire
    instruction = Message(RecordDict(), dst_node_id=9, message_type=MessageType.TRAIN)
    counts: Counter[str] = Counter()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(
        seed=st.integers(0, 2**32 - 1),
        dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
        broken=st.booleans(),
        array_mutations=_sorted_unique(ARRAY_MUTATIONS),
        content_mutations=_sorted_unique(CONTENT_MUTATIONS),
        variations=_sorted_unique(VALID_VARIATIONS),
        over_the_wire=st.booleans(),
    )
    def run(seed, dtype, broken, array_mutations, content_mutations, variations, over_the_wire):
        if not broken:
            array_mutations = content_mutations = ()
        content, valid = build_content(sent["c"], seed, dtype, array_mutations, content_mutations, variations)
        if over_the_wire:
            content = wire_roundtrip(Message(content, reply_to=instruction)).content
        accepted, reason = verdict(content, server, sent)
        assert accepted == valid, (array_mutations, content_mutations, reason)
        assert accepted or reason
        counts["valid" if valid else "broken"] += 1
        counts.update(array_mutations + content_mutations)

    run()
    assert counts["valid"] > 50 and counts["broken"] > 50
    assert counts["dtype-float8_e4m3fn"] and counts["raw-float8-by-hand"]


@pytest.mark.parametrize("name", sorted(ARRAY_MUTATIONS))
def test_every_broken_array_is_rejected_alone(server, sent, name):
    content, valid = build_content(sent["c"], 0, torch.float32, (name,), (), ())
    assert not valid and verdict(content, server, sent)[0] is False


@pytest.mark.parametrize("dtype", FLOAT8)
def test_float8_arrays_are_a_malformed_reply(dtype):
    content = reply_to_content(Reply({"k": torch.zeros(2, 3, dtype=dtype)}, 3, 1.0))
    assert content[keys.ARRAYS]["k"].stype == RAW_STYPE
    with pytest.raises(MalformedReplyError, match="dtype torch.float8_e.* is not one an adapter may have"):
        content_to_reply(content)


# --------------------------------------------------------- through the strategy
GARBAGE = {
    "float8": (lambda a: {**a, next(iter(a)): a[next(iter(a))].to(torch.float8_e4m3fn)}, "float8_e4m3fn"),
    "int64": (lambda a: {k: v.to(torch.int64) for k, v in a.items()}, "int64"),
    "complex": (lambda a: {k: v.to(torch.complex64) for k, v in a.items()}, "complex64"),
    "nan": (lambda a: {k: torch.full_like(v, math.nan) for k, v in a.items()}, "NaN or inf"),
}


def _strategy(ids):
    server = make_server("hyperlora", _peft(), FederationConfig(max_update_norm=BOUND))
    strategy = AdapterStrategy(server)
    for n, cid in enumerate(ids):
        strategy.directory.node_of[cid] = 100 + n
        strategy.directory.client_of[100 + n] = cid
    strategy.history.sampled[1] = list(ids)
    return strategy, server.configure_round(1, list(ids))


def _state(server):
    state = {f"h/{k}": v for k, v in server.hypernet.state_dict().items()}
    state |= {f"t/{k}": v for k, v in server.trainer.state_dict().items()}
    return {k: v.detach().clone() for k, v in state.items()}


def test_aggregate_train_rejects_garbage_messages_and_learns_as_without_them(monkeypatch):
    InProcessGrid([], [], {})
    bad = [*GARBAGE, "undecodable", "bad metrics", "client error", "decoder raises"]
    ids = ["good", *bad]
    strategy, sent = _strategy(ids)
    twin, twin_sent = _strategy(ids)  # the same clients, but only the good one replies
    good = Reply({k: v + 0.01 for k, v in sent["good"].items()}, 7, 1.5)

    def instruction(cid, s):
        return Message(RecordDict(), dst_node_id=s.directory.node_of[cid], message_type=MessageType.TRAIN)

    def contents():
        yield "good", reply_to_content(good)
        for name, (change, _) in GARBAGE.items():
            yield name, reply_to_content(Reply(change(sent[name]), 3, 1.0))
        yield (
            "undecodable",
            RecordDict(
                {
                    keys.ARRAYS: ArrayRecord({"k": Array(dtype="float32", shape=(4,), stype=RAW_STYPE, data=b"x")}),
                    keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 3}),
                }
            ),
        )
        yield (
            "bad metrics",
            RecordDict(
                {
                    keys.ARRAYS: adapter_to_record(sent["bad metrics"]),
                    keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: [3]}),
                }
            ),
        )
        yield "decoder raises", reply_to_content(Reply(sent["decoder raises"], 3, 1.0))

    messages = [wire_roundtrip(Message(c, reply_to=instruction(cid, strategy))) for cid, c in contents()]
    messages.append(Message(Error(0, "disk full"), reply_to=instruction("client error", strategy)))
    decode = strategy_module.content_to_reply
    trap = messages[-2].content

    def flaky_decode(content):
        if content is trap:
            raise KeyError("something nobody foresaw")
        return decode(content)

    monkeypatch.setattr(strategy_module, "content_to_reply", flaky_decode)
    strategy.aggregate_train(1, messages)
    twin.aggregate_train(1, [wire_roundtrip(Message(reply_to_content(good), reply_to=instruction("good", twin)))])

    [outcome], [twin_outcome] = strategy.history.rounds, twin.history.rounds
    assert outcome.accepted == twin_outcome.accepted == ["good"] and sorted(outcome.rejected) == sorted(bad)
    for name, (_, reason) in GARBAGE.items():
        assert reason in outcome.rejected[name]
    assert "cannot decode" in outcome.rejected["undecodable"]
    assert "num_examples" in outcome.rejected["bad metrics"]
    assert "disk full" in outcome.rejected["client error"]
    assert outcome.rejected["decoder raises"].startswith("the reply could not be decoded (KeyError")
    assert all(torch.equal(sent["good"][k], twin_sent["good"][k]) for k in sent["good"])
    after, twin_after = _state(strategy.server), _state(twin.server)
    assert list(after) == list(twin_after)
    assert all(
        torch.equal(after[k].view(-1).view(torch.uint8), twin_after[k].view(-1).view(torch.uint8)) for k in after
    )
    assert outcome.update_norms == twin_outcome.update_norms
