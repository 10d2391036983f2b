import math

import pytest
import torch

from hyperfed.federation import FederationConfig, Reply, fedavg, make_server, screen_replies
from hypernet import discover_targets
from hypernet.errors import ConfigError


def test_fedavg_is_the_weighted_mean():
    a = {"k": torch.tensor([1.0, 2.0])}
    b = {"k": torch.tensor([3.0, 6.0])}
    torch.testing.assert_close(fedavg([a, b], [1, 3])["k"], torch.tensor([2.5, 5.0]))


@pytest.mark.parametrize("method", ["hyperlora", "fedavg", "local"])
def test_each_sampled_client_gets_an_adapter_with_peft_keys(tiny_peft, method):
    server = make_server(method, tiny_peft, FederationConfig(method=method))
    sent = server.configure_round(1, ["a", "b"])
    spec = discover_targets(tiny_peft)
    assert set(sent) == {"a", "b"}
    assert all(list(adapter) == list(spec.state_dict_shapes()) for adapter in sent.values())


def test_hyperlora_sends_different_adapters_and_fedavg_the_same(tiny_peft):
    hyper = make_server("hyperlora", tiny_peft, FederationConfig())
    sent = hyper.configure_round(1, ["a", "b"])
    key = next(k for k in sent["a"] if "lora_A" in k)
    assert not torch.equal(sent["a"][key], sent["b"][key])
    fed = make_server("fedavg", tiny_peft, FederationConfig(method="fedavg"))
    sent = fed.configure_round(1, ["a", "b"])
    assert all(torch.equal(sent["a"][k], sent["b"][k]) for k in sent["a"])


def test_malformed_replies_are_rejected_with_reasons_and_the_round_goes_on(tiny_peft):
    server = make_server("hyperlora", tiny_peft, FederationConfig(max_update_norm=5.0))
    sent = server.configure_round(1, ["ok", "nan", "shape", "keys", "huge", "zero"])
    key = next(iter(sent["ok"]))
    good = {k: v + 0.01 for k, v in sent["ok"].items()}
    replies = {
        "ok": Reply(good, 10, 1.0),
        "nan": Reply({**sent["nan"], key: torch.full_like(sent["nan"][key], math.nan)}, 10),
        "shape": Reply({**sent["shape"], key: torch.zeros(3, 3)}, 10),
        "keys": Reply({k: v for k, v in sent["keys"].items() if k != key}, 10),
        "huge": Reply({k: v + 10.0 for k, v in sent["huge"].items()}, 10),
        "zero": Reply(sent["zero"], 0),
        "stranger": Reply(good, 10),
    }
    before = server.hypernet.clients.parameter("ok").detach().clone()
    outcome = server.aggregate_round(1, replies)
    assert outcome.accepted == ["ok"]
    assert set(outcome.rejected) == {"nan", "shape", "keys", "huge", "zero", "stranger"}
    assert "NaN" in outcome.rejected["nan"] and "norm" in outcome.rejected["huge"]
    assert "no adapter was sent" in outcome.rejected["stranger"]
    server.configure_round(2, ["ok"])
    server.aggregate_round(2, {"ok": Reply({k: v + 0.01 for k, v in server.sent["ok"].items()}, 10)})
    assert not torch.equal(before, server.hypernet.clients.parameter("ok"))  # training went on


def test_screen_replies_names_every_reason(tiny_peft):
    spec = discover_targets(tiny_peft)
    accepted, rejected = screen_replies(spec, {}, {"x": Reply({}, 1)}, 1.0)
    assert not accepted and "no adapter" in rejected["x"]


def test_unknown_method_is_a_config_error(tiny_peft):
    with pytest.raises(ConfigError):
        make_server("fedprox", tiny_peft, FederationConfig())
