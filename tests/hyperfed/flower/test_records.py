import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict

from hyperfed.federation import Reply
from hyperfed.flower import keys
from hyperfed.flower.errors import MalformedReplyError
from hyperfed.flower.inprocess import InProcessGrid, wire_roundtrip
from hyperfed.flower.records import (
    RAW_STYPE,
    adapter_to_record,
    content_to_eval,
    content_to_reply,
    eval_to_content,
    record_to_adapter,
    reply_to_content,
)

KEY = "base_model.model.model.layers.{}.self_attn.q_proj.lora_{}.weight"


def _adapter(dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    return {KEY.format(i, ab): torch.randn(4, 8, generator=gen).to(dtype) for i in range(2) for ab in "AB"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64, torch.bfloat16])
def test_adapter_round_trip_keeps_keys_order_dtype_and_bits(dtype):
    adapter = _adapter(dtype)
    back = record_to_adapter(adapter_to_record(adapter))
    assert list(back) == list(adapter)
    for key in adapter:
        assert back[key].dtype == dtype and torch.equal(back[key], adapter[key])


def test_numpy_dtypes_stay_readable_by_flower_and_bfloat16_travels_raw():
    record = adapter_to_record({"a": torch.ones(2, 3), "b": torch.ones(2).bfloat16()})
    assert record["a"].stype == "numpy.ndarray" and record["b"].stype == RAW_STYPE
    assert torch.equal(ArrayRecord({"a": record["a"]}).to_torch_state_dict()["a"], torch.ones(2, 3))


def test_adapter_survives_the_wire():
    InProcessGrid([], [], {})  # sets Flower's TaskIdentity, as a runtime does
    adapter = _adapter(torch.bfloat16)
    message = Message(
        RecordDict({keys.ARRAYS: adapter_to_record(adapter)}), dst_node_id=7, message_type=MessageType.TRAIN
    )
    back = record_to_adapter(wire_roundtrip(message).content[keys.ARRAYS])
    assert all(torch.equal(back[k], adapter[k]) for k in adapter)


def test_reply_and_eval_contents_round_trip():
    reply = content_to_reply(reply_to_content(Reply(_adapter(), num_examples=12, train_loss=1.5)))
    assert reply.num_examples == 12 and reply.train_loss == 1.5 and set(reply.adapter) == set(_adapter())
    assert content_to_eval(eval_to_content(2.25, 5)) == (2.25, 5)


@pytest.mark.parametrize(
    "content,match",
    [
        (RecordDict({keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 3})}), "no ArrayRecord"),
        (RecordDict({keys.ARRAYS: ArrayRecord()}), "no MetricRecord"),
        (
            RecordDict(
                {
                    keys.ARRAYS: ArrayRecord(
                        {"k": Array(dtype="float32", shape=(2,), stype="numpy.ndarray", data=b"garbage")}
                    ),
                    keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 3}),
                }
            ),
            "cannot decode",
        ),
        (
            RecordDict(
                {
                    keys.ARRAYS: ArrayRecord({"k": Array(dtype="nope", shape=(2,), stype=RAW_STYPE, data=b"1234")}),
                    keys.METRICS: MetricRecord({keys.NUM_EXAMPLES: 3}),
                }
            ),
            "unknown torch dtype",
        ),
    ],
)
def test_malformed_contents_raise_a_typed_error(content, match):
    with pytest.raises(MalformedReplyError, match=match):
        content_to_reply(content)
