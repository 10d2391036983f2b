"""Reply screening is total: every reply is accepted as valid or rejected with a reason.

The fuzz tests build replies around the adapters a real tiny server sent (``reply_fuzz``),
with the verdict known from how each was built, and check on every batch that

* ``screen_replies`` and ``aggregate_round`` never raise;
* accepted ⇔ the oracle says valid, and every rejection has a reason;
* a server that saw every reply ends bit for bit where a twin that saw only the valid ones
  ends (so rejected replies change nothing: hypernetwork, optimizer state, embeddings,
  gradients, FedAvg's global adapter, local adapters), and a batch with no valid reply
  leaves the state bitwise unchanged.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import Counter

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reply_fuzz import BOUND, MUTATIONS, NON_REPLIES, STRANGER, Plan, plans

from hyperfed.federation import FederationConfig, Reply, make_server, screen_replies
from hyperfed.federation.servers import MAX_NUM_EXAMPLES

# building the broken tensors makes torch warn that nested / CSR / quantized are prototypes
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CLIENTS = [f"client-{i}" for i in range(4)]
#: Fresh twin servers every this many rounds: learning from random noise for hundreds of
#: rounds inflates the hypernetwork's adapters (‖θ‖ ≈ 4000 after 120 rounds), far from any
#: real run and beyond the margin the oracle keeps for bfloat16 rounding.
RESTART_EVERY = 10


def server_state(server) -> dict[str, torch.Tensor]:
    """Every tensor a round may change."""
    if server.method == "hyperlora":
        state = {f"hypernet/{k}": v for k, v in server.hypernet.state_dict().items()}
        state |= {f"trainer/{k}": v for k, v in server.trainer.state_dict().items()}
        state |= {f"grad/{n}": p.grad for n, p in server.hypernet.named_parameters() if p.grad is not None}
    elif server.method == "fedavg":
        state = dict(server.global_adapter)
    else:
        state = {f"{c}/{k}": v for c, adapter in sorted(server.adapters.items()) for k, v in adapter.items()}
    return {k: v.detach().clone() for k, v in state.items()}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(_bits(a[key]), _bits(b[key])), key


class Fuzzer:
    """Two identical servers: ``seen_all`` gets every reply, ``seen_valid`` only the valid ones."""

    def __init__(self, method: str, peft) -> None:
        self.method, self.peft = method, peft
        self.round = 0
        self.counts: Counter[str] = Counter()

    def _fresh_servers(self) -> None:
        config = FederationConfig(method=self.method, max_update_norm=BOUND)
        self.seen_all = make_server(self.method, copy.deepcopy(self.peft), config)
        self.seen_valid = make_server(self.method, copy.deepcopy(self.peft), config)

    def batch(self, batch: list[Plan]) -> None:
        if self.round % RESTART_EVERY == 0:
            self._fresh_servers()
        self.round += 1
        sent = self.seen_all.configure_round(self.round, CLIENTS)
        twin_sent = self.seen_valid.configure_round(self.round, CLIENTS)
        for cid in CLIENTS:
            assert_bitwise_equal(sent[cid], twin_sent[cid])
            # the oracle's margin: bfloat16 rounding (≤ 2⁻⁸‖θ‖) must stay far below 0.5 × BOUND
            assert math.sqrt(sum(float((v.double() ** 2).sum()) for v in sent[cid].values())) < 100
        replies: dict[str, object] = {}
        valid: set[str] = set()
        for cid, plan in zip(CLIENTS, batch, strict=False):
            reply, ok, applied = plan.build(sent[cid])
            target = f"{STRANGER}-{cid}" if plan.stranger else cid
            replies[target] = reply
            if ok:
                valid.add(target)
            self.counts["replies"] += 1
            self.counts["valid" if ok else "invalid"] += 1
            self.counts.update(f"mutation:{m}" for m in applied)
            self.counts[f"wrapper:{plan.wrapper}"] += 1
            self.counts.update(
                f"field:{name}"
                for name, good in [("num_examples", plan.num_examples_ok), ("train_loss", plan.train_loss_ok)]
                if not good
            )

        accepted, rejected = screen_replies(self.seen_all.spec, sent, replies, BOUND)
        assert set(accepted) == valid, {c: rejected.get(c) for c in set(accepted) ^ valid}
        assert set(rejected) == set(replies) - valid
        assert all(isinstance(reason, str) and reason for reason in rejected.values())

        before = server_state(self.seen_all)
        outcome = self.seen_all.aggregate_round(self.round, replies)
        assert outcome.accepted == sorted(valid)
        assert set(outcome.rejected) == set(replies) - valid
        self.seen_valid.aggregate_round(self.round, {c: replies[c] for c in replies if c in valid})
        after = server_state(self.seen_all)
        assert_bitwise_equal(after, server_state(self.seen_valid))
        if not valid:
            assert_bitwise_equal(before, after)
            self.counts["all-rejected batches"] += 1


def fuzz(method: str, peft, examples: int) -> Counter[str]:
    fuzzer = Fuzzer(method, peft)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same replies on every run
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(plans(), min_size=len(CLIENTS), max_size=len(CLIENTS)))
    def run(batch: list[Plan]) -> None:
        fuzzer.batch(batch)

    run()
    logging.getLogger(__name__).info("fuzzed %s: %s", method, dict(fuzzer.counts))
    return fuzzer.counts


def _check_coverage(counts: Counter[str], replies: int) -> None:
    assert counts["replies"] >= replies
    assert counts["valid"] > replies // 5 and counts["invalid"] > replies // 5
    assert counts["mutation:dtype-float8_e4m3fn"] and counts["mutation:meta"] and counts["mutation:sparse-coo"]


@pytest.mark.parametrize("method,examples", [("hyperlora", 250), ("fedavg", 40), ("local", 40)])
def test_fuzzed_replies_are_accepted_exactly_when_valid(tiny_peft, method, examples):
    counts = fuzz(method, tiny_peft, examples)
    _check_coverage(counts, examples * len(CLIENTS))


@pytest.mark.slow
def test_ten_thousand_fuzzed_replies_never_crash_and_never_slip_through(tiny_peft):
    counts = fuzz("hyperlora", tiny_peft, 2_500)
    _check_coverage(counts, 10_000)


def _plan(mutations=(), wrapper="reply", big_norm=False, dtype=None) -> Plan:
    return Plan(
        seed=1,
        radius=0.5,
        big_norm=big_norm,
        dtype=dtype,
        style="plain",
        container="dict",
        mutations=mutations,
        wrapper=wrapper,
        num_examples=4,
        num_examples_ok=True,
        train_loss=1.0,
        train_loss_ok=True,
        stranger=False,
    )


@pytest.mark.parametrize("mutation", [*MUTATIONS, "big-norm"])
def test_every_mutation_alone_is_rejected(tiny_peft, mutation):
    server = make_server("hyperlora", tiny_peft, FederationConfig(max_update_norm=BOUND))
    sent = server.configure_round(1, ["c"])
    plan = _plan(mutations=() if mutation == "big-norm" else (mutation,), big_norm=mutation == "big-norm")
    reply, valid, applied = plan.build(sent["c"])
    assert applied == (mutation,) and not valid  # the generator really builds this breakage
    accepted, rejected = screen_replies(server.spec, sent, {"c": reply}, BOUND)
    assert not accepted and rejected["c"]


@pytest.mark.parametrize("wrapper", sorted(NON_REPLIES))
def test_every_non_reply_is_rejected(tiny_peft, wrapper):
    server = make_server("hyperlora", tiny_peft, FederationConfig(max_update_norm=BOUND))
    sent = server.configure_round(1, ["c"])
    reply, valid, _ = _plan(wrapper=wrapper).build(sent["c"])
    assert not valid
    accepted, rejected = screen_replies(server.spec, sent, {"c": reply}, BOUND)
    assert not accepted and rejected["c"]


@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_the_valid_plan_is_accepted_in_every_adapter_dtype(tiny_peft, dtype):
    server = make_server("hyperlora", tiny_peft, FederationConfig(max_update_norm=BOUND))
    sent = server.configure_round(1, ["c"])
    reply, valid, _ = _plan(dtype=dtype).build(sent["c"])
    accepted, rejected = screen_replies(server.spec, sent, {"c": reply}, BOUND)
    assert valid and list(accepted) == ["c"], rejected


# ------------------------------------------------------------- what the issue found
def _sent(server):
    return server.configure_round(1, ["c"])["c"]


def _with(adapter, key_fn):
    key = next(iter(adapter))
    return {**adapter, key: key_fn(adapter[key])}


FOUND = {
    "num_examples=True": (lambda a: Reply(a, True, 1.0), "num_examples"),
    "num_examples=10**26": (lambda a: Reply(a, 10**26, 1.0), "num_examples"),
    "num_examples=10**5000": (lambda a: Reply(a, 10**5000, 1.0), "an int of 16610 bits"),
    "num_examples above the bound": (lambda a: Reply(a, MAX_NUM_EXAMPLES + 1, 1.0), "num_examples"),
    "train_loss str": (lambda a: Reply(a, 3, "1.0"), "train_loss"),
    "train_loss None": (lambda a: Reply(a, 3, None), "train_loss"),
    "train_loss inf": (lambda a: Reply(a, 3, math.inf), "finite"),
    "train_loss 2**1024": (lambda a: Reply(a, 3, 2**1024), "float range"),
    "adapter None": (lambda a: Reply(None, 3), "mapping"),
    "adapter list": (lambda a: Reply(list(a.values()), 3), "mapping"),
    "not a Reply": (lambda a: {"adapter": a, "num_examples": 3}, "expected a Reply"),
    "meta tensor": (lambda a: Reply(_with(a, lambda t: t.to("meta")), 3), "meta"),
    "sparse tensor": (lambda a: Reply(_with(a, lambda t: t.to_sparse()), 3), "dense"),
    "float8 tensor": (lambda a: Reply(_with(a, lambda t: t.to(torch.float8_e4m3fn)), 3), "float8_e4m3fn"),
    "complex tensor": (lambda a: Reply(_with(a, lambda t: t.to(torch.complex64)), 3), "complex64"),
    "float64 1e300": (lambda a: Reply(_with(a, lambda t: t.double().fill_(1e300)), 3), "NaN or inf"),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_each_reply_the_issue_found_is_rejected_with_its_reason(tiny_peft, case):
    make, reason = FOUND[case]
    server = make_server("hyperlora", tiny_peft, FederationConfig(max_update_norm=BOUND))
    adapter = _sent(server)
    before = server_state(server)
    outcome = server.aggregate_round(1, {"c": make(adapter)})
    assert outcome.accepted == [] and reason in outcome.rejected["c"]
    assert_bitwise_equal(before, server_state(server))


def test_a_check_that_breaks_rejects_that_reply_and_logs_the_traceback(tiny_peft, caplog):
    class Broken(dict):
        def __getitem__(self, key):
            raise RuntimeError("the storage went away")

    server = make_server("hyperlora", tiny_peft, FederationConfig(max_update_norm=BOUND))
    sent = server.configure_round(1, ["bad", "good"])
    good = {k: v + 0.01 for k, v in sent["good"].items()}
    outcome = server.aggregate_round(1, {"bad": Reply(Broken(sent["bad"]), 3), "good": Reply(good, 3, 1.0)})
    assert outcome.accepted == ["good"]
    assert outcome.rejected["bad"] == "the reply could not be screened (RuntimeError: the storage went away)"
    [record] = [r for r in caplog.records if "'bad'" in r.getMessage()]
    assert record.levelno == logging.WARNING and record.exc_info is not None


def test_accepted_replies_are_fresh_tensors_in_the_sent_dtype(tiny_peft):
    server = make_server("local", tiny_peft, FederationConfig(method="local", max_update_norm=BOUND))
    sent = server.configure_round(1, ["c"])["c"]
    returned = {k: torch.nn.Parameter(v.double() + 0.01) for k, v in sent.items()}
    accepted, rejected = screen_replies(server.spec, {"c": sent}, {"c": Reply(returned, 3)}, BOUND)
    assert not rejected
    clean = accepted["c"].adapter
    assert list(clean) == list(sent)
    for key, value in clean.items():
        assert value.dtype == sent[key].dtype and not value.requires_grad
        assert value.data_ptr() != returned[key].data_ptr()


def test_unknown_losses_are_left_out_of_the_round_mean(tiny_peft):
    server = make_server("fedavg", tiny_peft, FederationConfig(method="fedavg", max_update_norm=BOUND))
    sent = server.configure_round(1, ["a", "b"])
    outcome = server.aggregate_round(1, {"a": Reply(sent["a"], 3, 2.0), "b": Reply(sent["b"], 3)})
    assert outcome.accepted == ["a", "b"] and outcome.train_loss == 2.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_reply_on_the_gpu_is_screened_and_copied_to_the_sent_device(tiny_peft):
    server = make_server("hyperlora", tiny_peft, FederationConfig(max_update_norm=BOUND))
    sent = server.configure_round(1, ["ok", "f8"])
    ok = {k: (v + 0.01).cuda() for k, v in sent["ok"].items()}
    f8 = {k: v.cuda().to(torch.float8_e4m3fn) for k, v in sent["f8"].items()}
    accepted, rejected = screen_replies(server.spec, sent, {"ok": Reply(ok, 3), "f8": Reply(f8, 3)}, BOUND)
    assert list(accepted) == ["ok"] and "float8_e4m3fn" in rejected["f8"]
    assert all(v.device == sent["ok"][k].device for k, v in accepted["ok"].adapter.items())
