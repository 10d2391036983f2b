"""Generated client replies for the screening fuzz tests, each with its expected verdict.

A reply is built around the adapter the server really sent, from a *plan* that hypothesis
draws: a valid reply (the sent adapter plus noise well inside the norm bound, possibly cast
to another adapter dtype, as a Parameter, non-contiguous, in another Mapping type) that
zero or more *mutations* then break. The oracle is the plan itself: a reply is valid
exactly when no breaking mutation could be applied, its ``num_examples`` and
``train_loss`` were drawn from the valid pools and it went to a client that was sent an
adapter. Nothing here calls the code under test.
"""

from __future__ import annotations

import math
import types
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import strategies as st

from hyperfed.federation.servers import MAX_NUM_EXAMPLES, Reply

#: The norm bound the fuzzed servers run with; valid noise stays ≤ 0.5×, "big norm" ≥ 2×,
#: so no dtype rounding can move a reply across the bound.
BOUND = 5.0
STRANGER = "stranger"


class _RaisingMapping(Mapping):
    """Has the right keys, but reading a value fails."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = keys

    def __getitem__(self, key: str) -> torch.Tensor:
        raise RuntimeError("the storage went away")

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class _UniterableMapping(_RaisingMapping):
    def __iter__(self) -> Iterator[str]:
        raise OSError("cannot list the keys")


class _ExplodingReply(Reply):
    """A Reply whose adapter cannot even be read."""

    @property  # type: ignore[override]
    def adapter(self) -> Mapping[str, torch.Tensor]:
        raise RuntimeError("boom")


def _exploding_reply(adapter: object, num_examples: object, train_loss: object) -> Reply:
    reply = object.__new__(_ExplodingReply)
    reply.__dict__.update(num_examples=num_examples, train_loss=train_loss)
    return reply


class _Tagged:
    """A value with its verdict, for ``sampled_from`` pools that hypothesis cannot compare."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"<{type(self.value).__name__}>"


# ------------------------------------------------------------------ pools of fields
def _num_examples() -> st.SearchStrategy[tuple[object, bool]]:
    valid = st.one_of(st.integers(1, 10_000), st.integers(1, MAX_NUM_EXAMPLES), st.integers(1, 1000).map(np.int64)).map(
        lambda n: (n, True)
    )
    invalid = st.one_of(
        st.integers(max_value=0),
        st.integers(min_value=MAX_NUM_EXAMPLES + 1),
        st.sampled_from([10**26, 10**5000, -(10**5000)]),
        st.sampled_from([True, False, np.True_, np.False_]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(["10", b"10", None, [10], (10,), 3 + 0j, torch.tensor(3), np.array([3])]).map(_Tagged),
    ).map(lambda v: (v.value if isinstance(v, _Tagged) else v, False))
    return st.one_of(valid, valid, valid, invalid)


def _train_loss() -> st.SearchStrategy[tuple[object, bool]]:
    valid = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.just(math.nan),
        st.integers(-(10**300), 10**300),
        st.floats(width=32, allow_nan=False, allow_infinity=False).map(np.float32),
    ).map(lambda v: (v, True))
    invalid = st.one_of(
        st.sampled_from([math.inf, -math.inf, np.float32("inf"), np.float64("-inf")]),
        st.integers(min_value=2**1024),
        st.integers(max_value=-(2**1024)),
        st.sampled_from(["1.0", None, True, False, np.True_, [1.0], 1j, torch.tensor(1.0), b"x"]).map(_Tagged),
    ).map(lambda v: (v.value if isinstance(v, _Tagged) else v, False))
    return st.one_of(valid, valid, valid, invalid)


# -------------------------------------------------------------- adapter mutations
Adapter = dict[str, torch.Tensor]
Mutation = Callable[[dict, list[str], np.random.Generator], object]

_BAD_DTYPES = {
    "int32": torch.int32,
    "int64": torch.int64,
    "uint8": torch.uint8,
    "bool": torch.bool,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e5m2": torch.float8_e5m2,
}


def _one(fn: Callable[[torch.Tensor], object]) -> Mutation:
    """A mutation of one (randomly chosen) value."""

    def mutate(adapter: dict, keys: list[str], rng: np.random.Generator) -> dict:
        key = keys[rng.integers(len(keys))]
        adapter[key] = fn(adapter[key])
        return adapter

    return mutate


def _set_element(value: float, dtype: torch.dtype | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to(dtype or t.dtype, copy=True).contiguous()
        t.view(-1)[t.numel() // 2] = value
        return t

    return fn


def _drop_key(adapter: dict, keys: list[str], rng: np.random.Generator) -> dict:
    del adapter[keys[rng.integers(len(keys))]]
    return adapter


def _extra_key(adapter: dict, keys: list[str], rng: np.random.Generator) -> dict:
    adapter["base_model.model.extra.lora_A.weight"] = torch.zeros(2, 2)
    return adapter


def _rename_key(adapter: dict, keys: list[str], rng: np.random.Generator) -> dict:
    key = keys[rng.integers(len(keys))]
    adapter[key.replace("lora_", "lora_X")] = adapter.pop(key)
    return adapter


def _non_str_key(adapter: dict, keys: list[str], rng: np.random.Generator) -> dict:
    adapter[7] = torch.zeros(2, 2)
    return adapter


def _wrap(fn: Callable[[dict], object]) -> Mutation:
    return lambda adapter, keys, rng: fn(adapter)


#: name → mutation; every one leaves a reply that must be rejected, whatever ran before it.
#: Applied in this order (values → dtype → layout/shape → value types → keys → container),
#: so a later mutation never turns an earlier one back into a valid adapter.
MUTATIONS: dict[str, Mutation] = {
    "nan": _one(_set_element(math.nan)),
    "inf": _one(_set_element(math.inf)),
    "-inf": _one(_set_element(-math.inf)),
    "huge": _one(_set_element(1e30)),
    "huge-float64": _one(_set_element(1e300, torch.float64)),  # finite in float64, inf as sent (float32)
    **{f"dtype-{name}": _one(lambda t, d=dtype: t.detach().to(d)) for name, dtype in _BAD_DTYPES.items()},
    "quantized": _one(lambda t: torch.quantize_per_tensor(t.detach().float(), 0.1, 0, torch.qint8)),
    "sparse-coo": _one(lambda t: t.detach().to_sparse()),
    "sparse-csr": _one(lambda t: t.detach().to_sparse_csr()),
    "meta": _one(lambda t: t.detach().to("meta")),
    "nested": _one(lambda t: torch.nested.nested_tensor([t.detach()])),
    "transposed": _one(lambda t: t.detach().t()),
    "flattened": _one(lambda t: t.detach().reshape(-1)),
    "extra-row": _one(lambda t: torch.cat([t.detach(), t.detach()[:1]])),
    "scalar": _one(lambda t: t.detach().reshape(-1)[0]),
    "numpy": _one(lambda t: t.detach().float().numpy()),
    "list": _one(lambda t: t.detach().tolist()),
    "value-none": _one(lambda t: None),
    "value-float": _one(lambda t: 0.5),
    "value-str": _one(lambda t: "tensor"),
    "drop-key": _drop_key,
    "extra-key": _extra_key,
    "rename-key": _rename_key,
    "non-str-key": _non_str_key,
    "adapter-none": _wrap(lambda a: None),
    "adapter-list": _wrap(lambda a: list(a.values())),
    "adapter-items": _wrap(lambda a: list(a.items())),
    "adapter-str": _wrap(lambda a: "adapter.safetensors"),
    "adapter-tensor": _wrap(lambda a: torch.zeros(4)),
    "adapter-raising-mapping": _wrap(lambda a: _RaisingMapping(list(a))),
    "adapter-uniterable-mapping": _wrap(lambda a: _UniterableMapping(list(a))),
}
BIG_NORM = "big-norm"  # noise of 2…10⁶ × BOUND instead of ≤ 0.5 × BOUND

_VALID_DTYPES = [None, torch.float16, torch.bfloat16, torch.float32, torch.float64]
_VALID_STYLES = ["plain", "parameter", "requires-grad", "non-contiguous"]
_CONTAINERS: dict[str, Callable[[dict], Mapping]] = {
    "dict": dict,
    "reversed": lambda a: dict(reversed(list(a.items()))),
    "ordered": OrderedDict,
    "proxy": types.MappingProxyType,
}
NON_REPLIES: dict[str, Callable[[object, object, object], object]] = {
    "none": lambda a, n, loss: None,
    "str": lambda a, n, loss: "reply",
    "dict": lambda a, n, loss: {"adapter": a, "num_examples": n, "train_loss": loss},
    "tuple": lambda a, n, loss: (a, n, loss),
    "namespace": lambda a, n, loss: types.SimpleNamespace(adapter=a, num_examples=n, train_loss=loss),
    "adapter-only": lambda a, n, loss: a,
    "exploding": _exploding_reply,
}


@dataclass(frozen=True)
class Plan:
    """How to build one reply around a sent adapter; ``valid`` is the oracle's verdict."""

    seed: int
    radius: float
    big_norm: bool
    dtype: torch.dtype | None
    style: str
    container: str
    mutations: tuple[str, ...]
    wrapper: str  # "reply" or a key of NON_REPLIES
    num_examples: object
    num_examples_ok: bool
    train_loss: object
    train_loss_ok: bool
    stranger: bool

    @property
    def fields_ok(self) -> bool:
        return self.wrapper == "reply" and self.num_examples_ok and self.train_loss_ok and not self.stranger

    def build(self, sent: Mapping[str, torch.Tensor]) -> tuple[object, bool, tuple[str, ...]]:
        """``(reply, valid, applied mutations)`` around ``sent`` (a mutation that cannot be
        built for this tensor, e.g. CSR of a float8 one, is skipped and does not count)."""
        rng = np.random.default_rng(self.seed)
        keys = list(sent)
        gen = torch.Generator().manual_seed(self.seed)
        noise = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in sent.items()}
        total = math.sqrt(sum(float((n**2).sum()) for n in noise.values()))
        scale = (self.radius if not self.big_norm else 2.0 + self.radius * 2e6) * BOUND / total
        adapter: dict = {}
        for k, v in sent.items():
            t = (v.double() + noise[k] * scale).to(self.dtype or v.dtype)
            if self.style == "parameter":
                t = torch.nn.Parameter(t)
            elif self.style == "requires-grad":
                t = t.requires_grad_(True) * 1  # a non-leaf with a grad_fn
            elif self.style == "non-contiguous":
                t = t.t().contiguous().t()
            adapter[k] = t
        applied = ("big-norm",) if self.big_norm else ()
        result: object = adapter
        for name in MUTATIONS:
            if name not in self.mutations:
                continue
            try:
                candidate = MUTATIONS[name](dict(result) if isinstance(result, dict) else result, keys, rng)
            except Exception:  # not buildable for this tensor (dtype, layout): skip it
                continue
            result, applied = candidate, (*applied, name)
        if isinstance(result, dict) and not any(isinstance(k, int) for k in result):
            result = _CONTAINERS[self.container](result)
        valid = self.fields_ok and not applied
        if self.wrapper == "reply":
            return Reply(result, self.num_examples, self.train_loss), valid, applied  # type: ignore[arg-type]
        return NON_REPLIES[self.wrapper](result, self.num_examples, self.train_loss), valid, applied


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    """One reply plan; about half are valid replies, the rest broken in one or more ways."""
    broken = draw(st.integers(0, 1)) == 1
    mutations: tuple[str, ...] = ()
    big_norm = False
    if broken:
        mutations = tuple(draw(st.lists(st.sampled_from([*MUTATIONS, BIG_NORM]), min_size=1, max_size=3, unique=True)))
        big_norm = BIG_NORM in mutations
        mutations = tuple(m for m in mutations if m != BIG_NORM)
    num_examples, num_ok = draw(_num_examples()) if broken else (draw(st.integers(1, 10_000)), True)
    train_loss, loss_ok = draw(_train_loss()) if broken else (draw(st.floats(0, 20)), True)
    wrapper = draw(st.sampled_from(["reply"] * 10 + list(NON_REPLIES))) if broken else "reply"
    return Plan(
        seed=draw(st.integers(0, 2**32 - 1)),
        radius=draw(st.floats(0.0, 0.5)),
        big_norm=big_norm,
        dtype=draw(st.sampled_from(_VALID_DTYPES)),
        style=draw(st.sampled_from(_VALID_STYLES)),
        container=draw(st.sampled_from(list(_CONTAINERS))),
        mutations=mutations,
        wrapper=wrapper,
        num_examples=num_examples,
        num_examples_ok=num_ok,
        train_loss=train_loss,
        train_loss_ok=loss_ok,
        stranger=broken and draw(st.integers(0, 19)) == 0,
    )
