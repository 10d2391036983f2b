"""validate_adapter: structure before numbers, copies in the sent dtype, an overflow-free norm."""

import math

import pytest
import torch

from hypernet import discover_targets, validate_adapter
from hypernet.base_models import add_lora, tiny_llama
from hypernet.errors import MalformedUpdateError
from hypernet.pfedhn import update_norm


@pytest.fixture(scope="module")
def spec():
    return discover_targets(add_lora(tiny_llama(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1), rank=2))


@pytest.fixture
def sent(spec):
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(shape, generator=gen) for k, shape in spec.state_dict_shapes().items()}


def test_the_norm_of_a_huge_finite_update_is_finite_and_exact():
    sent = {"k": torch.zeros(4, dtype=torch.float64)}
    returned = {"k": torch.full((4,), 1e200, dtype=torch.float64)}  # squares overflow float64
    assert update_norm(sent, returned) == pytest.approx(2e200)
    assert math.isnan(update_norm(sent, {"k": torch.tensor([math.nan, 0, 0, 0], dtype=torch.float64)}))
    assert update_norm({}, {}) == 0.0


def test_a_clean_copy_comes_back_in_spec_order_and_the_sent_dtype(spec, sent):
    returned = {k: torch.nn.Parameter(v.double() + 0.001) for k, v in reversed(list(sent.items()))}
    clean = validate_adapter(spec, returned, sent, 1.0)
    assert list(clean) == list(spec.state_dict_shapes())
    assert all(v.dtype == torch.float32 and not v.requires_grad for v in clean.values())
    assert all(v.data_ptr() != returned[k].data_ptr() for k, v in clean.items())


def test_finiteness_is_judged_on_what_the_server_computes_with(spec, sent):
    key = next(iter(sent))
    returned = {**sent, key: sent[key].double().fill_(1e300)}  # finite in float64, inf in float32
    with pytest.raises(MalformedUpdateError, match="NaN or inf"):
        validate_adapter(spec, returned, sent, math.inf)
    validate_adapter(spec, {**sent, key: sent[key].double()}, None)  # without sent: dtype kept


@pytest.mark.parametrize(
    "returned,match",
    [
        (None, "mapping"),
        ([1, 2], "mapping"),
        ({1: torch.zeros(1)}, "keys must be str"),
        ({"nope": torch.zeros(1)}, "wrong keys"),
    ],
)
def test_structure_is_checked_before_any_value(spec, returned, match):
    with pytest.raises(MalformedUpdateError, match=match):
        validate_adapter(spec, returned)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda t: t.numpy(), "expected a torch.Tensor"),
        (lambda t: t.to_sparse(), "not a dense tensor"),
        (lambda t: t.to("meta"), "meta tensor"),
        (lambda t: torch.quantize_per_tensor(t, 0.1, 0, torch.qint8), "quantized"),
        (lambda t: t.to(torch.float8_e5m2), "float8_e5m2 is not one the server computes in"),
        (lambda t: t.to(torch.int8), "int8"),
        (lambda t: t.to(torch.bool), "bool"),
        (lambda t: t.to(torch.complex128), "complex128"),
        (lambda t: t.t(), "shape"),
    ],
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_each_value_breakage_has_its_reason(spec, sent, change, match):
    key = next(iter(sent))
    with pytest.raises(MalformedUpdateError, match=match):
        validate_adapter(spec, {**sent, key: change(sent[key])}, sent, 1.0)
