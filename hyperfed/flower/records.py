"""Adapters and replies ↔ Flower records.

An adapter is a peft state dict (``{"…lora_A.weight": tensor}``); it travels as an
:class:`~flwr.app.ArrayRecord` under the same key names, one :class:`~flwr.app.Array` per
tensor, with its dtype. Dtypes NumPy knows (float32, float16, float64, …) use Flower's
standard NumPy encoding, so Flower's ``ArrayRecord.to_torch_state_dict()`` reads them too;
dtypes NumPy lacks (bfloat16, float8) travel as raw bytes with ``stype`` :data:`RAW_STYPE`.

Decoding is strict: only the dtypes an adapter may have
(:data:`hypernet.pfedhn.ADAPTER_DTYPES`: float16, bfloat16, float32, float64) come back, bit
for bit; anything else the server cannot compute with (float8, integers, bool, complex,
object arrays) and any array that does not decode is a :class:`MalformedReplyError`, never
another exception.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from hyperfed.federation.client_side import Evaluation
from hyperfed.federation.servers import Reply
from hyperfed.flower import keys
from hyperfed.flower.errors import MalformedReplyError
from hypernet.pfedhn import ADAPTER_DTYPES

__all__ = [
    "RAW_STYPE",
    "adapter_to_record",
    "record_to_adapter",
    "reply_to_content",
    "content_to_reply",
    "eval_to_content",
    "content_to_eval",
    "evaluation_to_content",
    "content_to_evaluation",
]

Adapter = dict[str, torch.Tensor]

RAW_STYPE = "torch.raw"  # little-endian raw bytes of a contiguous tensor; dtype = torch name
_NUMPY_STYPE = "numpy.ndarray"
_NUMPY_FLOATS = {np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)}  # native byte order
_ALLOWED = ", ".join(sorted(str(d).removeprefix("torch.") for d in ADAPTER_DTYPES))
_NO_NUMPY_DTYPE = {torch.bfloat16} | {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n)}


def _tensor_to_array(tensor: torch.Tensor) -> Array:
    t = tensor.detach().cpu().contiguous()
    if t.dtype in _NO_NUMPY_DTYPE:
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        return Array(dtype=str(t.dtype).removeprefix("torch."), shape=tuple(t.shape), stype=RAW_STYPE, data=raw)
    return Array(t.numpy())


class _NotAnAdapterDtype(ValueError):
    """An array that decodes, but to a dtype an adapter may not have."""


def _decode(array: Array) -> torch.Tensor:
    """The tensor of ``array``; the dtype is checked *before* torch sees the bytes (from a raw
    ``qint8`` buffer torch makes a quantized tensor without a quantizer: ``repr`` or
    ``q_scale()`` on it segfault)."""
    if array.stype == RAW_STYPE:
        dtype = getattr(torch, str(array.dtype), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown torch dtype {array.dtype!r}")
        if dtype not in ADAPTER_DTYPES:
            raise _NotAnAdapterDtype(str(dtype))
        return torch.frombuffer(bytearray(array.data), dtype=dtype).reshape(tuple(array.shape))
    if array.stype != _NUMPY_STYPE:
        raise ValueError(f"unsupported stype {array.stype!r}")
    values = array.numpy()
    if values.dtype not in _NUMPY_FLOATS:
        raise _NotAnAdapterDtype(f"numpy {values.dtype}")
    if not values.flags.writeable:
        values = np.array(values, copy=True)  # np.load gives read-only views of the bytes
    return torch.from_numpy(values)


def _array_to_tensor(key: str, array: Array) -> torch.Tensor:
    try:
        return _decode(array)
    except _NotAnAdapterDtype as exc:
        raise MalformedReplyError(f"{key}: dtype {exc} is not one an adapter may have ({_ALLOWED})") from None
    except Exception as exc:  # whatever the bytes make NumPy or torch raise, it is a bad reply
        raise MalformedReplyError(f"{key}: cannot decode the array ({type(exc).__name__}: {exc})") from None


def adapter_to_record(adapter: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """An :class:`~flwr.app.ArrayRecord` holding ``adapter`` under its peft key names.

    Parameters
    ----------
    adapter
        ``key → tensor`` in peft's state-dict format (any device; detached on the way).

    Returns
    -------
    ArrayRecord
        One :class:`~flwr.app.Array` per key, in the adapter's key order.
    """
    record = ArrayRecord()
    for key, tensor in adapter.items():
        record[key] = _tensor_to_array(tensor)
    return record


def record_to_adapter(record: ArrayRecord) -> Adapter:
    """The adapter inside ``record`` (CPU tensors, original dtypes and key order).

    Raises
    ------
    MalformedReplyError
        If an array cannot be decoded (corrupt bytes, unknown encoding) or has a dtype
        outside :data:`~hypernet.pfedhn.ADAPTER_DTYPES` (float8, integer, bool, complex).
    """
    if not isinstance(record, ArrayRecord):
        raise MalformedReplyError(f"expected an ArrayRecord, got {type(record).__name__}")
    return {key: _array_to_tensor(key, array) for key, array in record.items()}


def reply_to_content(reply: Reply) -> RecordDict:
    """The content of a train reply: the trained adapter plus ``num-examples`` and ``train-loss``."""
    metrics = MetricRecord({keys.NUM_EXAMPLES: int(reply.num_examples), keys.TRAIN_LOSS: float(reply.train_loss)})
    return RecordDict({keys.ARRAYS: adapter_to_record(reply.adapter), keys.METRICS: metrics})


def content_to_reply(content: RecordDict) -> Reply:
    """The :class:`~hyperfed.federation.Reply` a train-reply content carries.

    Only the *envelope* is checked here (records present, arrays decodable to adapter
    dtypes); the metric values are passed on as sent and whether the reply is well formed
    (``num-examples`` an int, ``train-loss`` a number, the adapter's keys, shapes, finite
    values and update norm) is the server's screening job, so every method and every
    transport screens the same way.

    Raises
    ------
    MalformedReplyError
        If the ``arrays`` or ``metrics`` record or the ``num-examples`` metric is missing,
        or an array cannot be decoded.
    """
    arrays = content.array_records.get(keys.ARRAYS)
    metrics = content.metric_records.get(keys.METRICS)
    if arrays is None:
        raise MalformedReplyError(f"the reply has no ArrayRecord {keys.ARRAYS!r} (records: {sorted(content)})")
    if metrics is None or keys.NUM_EXAMPLES not in metrics:
        raise MalformedReplyError(f"the reply has no MetricRecord {keys.METRICS!r} with {keys.NUM_EXAMPLES!r}")
    loss = metrics.get(keys.TRAIN_LOSS, float("nan"))  # a list or an int too: the screening judges it
    return Reply(adapter=record_to_adapter(arrays), num_examples=metrics[keys.NUM_EXAMPLES], train_loss=loss)


def eval_to_content(loss: float, num_examples: int) -> RecordDict:
    """The content of an evaluate reply: ``eval-loss`` and ``num-examples``."""
    return RecordDict({keys.METRICS: MetricRecord({keys.EVAL_LOSS: float(loss), keys.NUM_EXAMPLES: int(num_examples)})})


def content_to_eval(content: RecordDict) -> tuple[float, int]:
    """``(eval loss, num examples)`` from an evaluate reply.

    Raises
    ------
    MalformedReplyError
        If the metrics record or one of its two keys is missing.
    """
    metrics = content.metric_records.get(keys.METRICS)
    if metrics is None or keys.EVAL_LOSS not in metrics or keys.NUM_EXAMPLES not in metrics:
        raise MalformedReplyError(
            f"an evaluate reply needs {keys.EVAL_LOSS!r} and {keys.NUM_EXAMPLES!r} in {keys.METRICS!r}"
        )
    return float(metrics[keys.EVAL_LOSS]), int(metrics[keys.NUM_EXAMPLES])


def evaluation_to_content(evaluation: Evaluation, num_examples: int) -> RecordDict:
    """An evaluate reply carrying validation and (where there is one) test loss, and the
    fine-tuning steps chosen on validation; :func:`content_to_eval` still reads it."""
    content = eval_to_content(evaluation.val, num_examples)
    metrics = content.metric_records[keys.METRICS]
    if evaluation.test is not None:
        metrics[keys.TEST_LOSS] = float(evaluation.test)
    metrics[keys.FINETUNE_STEPS] = int(evaluation.finetune_steps)
    return content


def content_to_evaluation(content: RecordDict) -> Evaluation:
    """The :class:`Evaluation` of an evaluate reply (``test`` ``None`` if it has no test loss).

    Raises
    ------
    MalformedReplyError
        As :func:`content_to_eval`, or if ``test-loss`` / ``finetune-steps`` is not a number.
    """
    val, _ = content_to_eval(content)
    metrics = content.metric_records[keys.METRICS]
    try:
        test = float(metrics[keys.TEST_LOSS]) if keys.TEST_LOSS in metrics else None
        steps = int(metrics.get(keys.FINETUNE_STEPS, 0))
    except (TypeError, ValueError) as exc:
        raise MalformedReplyError(f"an evaluate reply's {keys.TEST_LOSS!r} or {keys.FINETUNE_STEPS!r}: {exc}") from None
    return Evaluation(val, test, steps)
