import json
import math

import pytest
import torch
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

from hyperfed.federation import FederationConfig, Reply, make_server
from hyperfed.federation.privacy import (
    SHARED_TEXT,
    client_level_epsilon,
    clip_and_noise,
    describe_guarantee,
)
from hypernet.errors import ConfigError


def test_epsilon_is_the_accountants_value_for_the_same_parameters():
    eps = client_level_epsilon(1.0, 0.125, 50, 1e-5)
    accountant = RDPAccountant()
    for _ in range(50):
        accountant.step(noise_multiplier=1.0, sample_rate=0.125)
    assert eps == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-12)
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = compute_rdp(q=0.125, noise_multiplier=1.0, steps=50, orders=orders)
    assert eps == pytest.approx(get_privacy_spent(orders=orders, rdp=rdp, delta=1e-5)[0], rel=1e-12)
    assert 6.5 < eps < 8.0  # DESIGN §8: 256 clients, 32 per round, z = 1, 50 rounds -> ε ≈ 7.2


def test_epsilon_grows_with_rounds_and_shrinks_with_noise():
    assert client_level_epsilon(1.0, 0.1, 10, 1e-5) < client_level_epsilon(1.0, 0.1, 40, 1e-5)
    assert client_level_epsilon(2.0, 0.1, 40, 1e-5) < client_level_epsilon(1.0, 0.1, 40, 1e-5)
    assert client_level_epsilon(0.0, 0.1, 40, 1e-5) == math.inf
    with pytest.raises(ConfigError):
        client_level_epsilon(1.0, 0.0, 10, 1e-5)


def test_guarantee_of_each_policy():
    shared = describe_guarantee(FederationConfig(), 15)
    assert shared == {"policy": "shared", "guarantee": "none", "epsilon": None, "delta": None, "text": SHARED_TEXT}
    assert describe_guarantee(FederationConfig(shared_policy="frozen"), 15)["guarantee"] == "exact"
    fed = FederationConfig(shared_policy="dp", sample_rate=0.25, dp_noise_multiplier=1.5, dp_delta=1e-6)
    dp = describe_guarantee(fed, 20)
    assert dp["guarantee"] == "(ε, δ)-DP" and dp["delta"] == 1e-6
    assert dp["epsilon"] == client_level_epsilon(1.5, 0.25, 20, 1e-6)


def test_without_noise_the_clipped_sum_is_exact():
    big, small = [torch.tensor([3.0, 4.0]), torch.tensor([12.0])], [torch.tensor([0.3, 0.0]), torch.tensor([0.4])]
    out = clip_and_noise(
        [big, small], clip=1.0, noise_multiplier=0.0, expected_clients=2.0, generator=torch.Generator()
    )
    # ‖big‖ = 13 -> scaled to norm 1; ‖small‖ = 0.5 stays
    torch.testing.assert_close(out[0], (torch.tensor([3.0, 4.0]) / 13 + torch.tensor([0.3, 0.0])) / 2)
    torch.testing.assert_close(out[1], (torch.tensor([12.0]) / 13 + torch.tensor([0.4])) / 2)


def test_noise_has_the_configured_std_and_comes_from_the_generator():
    zeros = [[torch.zeros(200_000)]]
    a = clip_and_noise(zeros, 0.5, 2.0, 4.0, torch.Generator().manual_seed(7))[0]
    b = clip_and_noise(zeros, 0.5, 2.0, 4.0, torch.Generator().manual_seed(7))[0]
    assert torch.equal(a, b)
    assert float(a.std()) == pytest.approx(2.0 * 0.5 / 4.0, rel=0.02)  # z·C / expected clients
    assert abs(float(a.mean())) < 0.01


def test_dp_server_clips_each_clients_shared_contribution(tiny_peft):
    """z = 0: the base adapters (which enter the output additively) move by exactly the mean
    of the clipped per-client updates over the expected number of clients."""
    fed = FederationConfig(shared_policy="dp", dp_noise_multiplier=0.0, dp_clip=1e-3, sample_rate=0.5)
    server = make_server("hyperlora", tiny_peft, fed)
    sent = server.configure_round(1, ["a", "b", "c", "d"])
    replies = {c: Reply({k: v - 0.05 for k, v in sent[c].items()}, 10) for c in ("a", "b")}
    base_before = [p.detach().clone() for p in server.hypernet.base_parameters()]
    emb_before = server.hypernet.client_parameter("a").detach().clone()
    server.aggregate_round(1, replies)
    moved = torch.cat(
        [(p.detach() - q).flatten() for p, q in zip(server.hypernet.base_parameters(), base_before, strict=True)]
    )
    # each client's whole shared gradient is clipped to 1e-3, so the base moves by at most
    # 2 · 1e-3 / (0.5 · 4 expected clients) = 1e-3 in L2
    assert 0 < float(moved.norm()) <= 1e-3 + 1e-9
    assert not torch.equal(emb_before, server.hypernet.client_parameter("a"))  # unclipped client state moved


def test_dp_scope_base_noises_and_steps_only_the_base_adapters(tiny_peft):
    """``dp_scope="base"``: the trunk and heads keep their values bit for bit (no gradient, no
    noise); the base adapters take the noised step; ε and the guarantee name the scope."""
    fed = FederationConfig(shared_policy="dp", dp_scope="base", dp_noise_multiplier=1.0, dp_clip=1e-3, sample_rate=0.5)
    server = make_server("hyperlora", tiny_peft, fed)
    sent = server.configure_round(1, ["a", "b", "c", "d"])
    replies = {c: Reply({k: v - 0.05 for k, v in sent[c].items()}, 10) for c in ("a", "b")}
    hypernet = server.hypernet
    learning = {id(p) for p in hypernet.base_parameters()}
    shared = {id(p) for p in hypernet.shared_parameters()}
    fixed = {n: p.detach().clone() for n, p in hypernet.named_parameters() if id(p) in shared - learning}
    base_before = [p.detach().clone() for p in hypernet.base_parameters()]
    assert fixed and base_before
    server.aggregate_round(1, replies)
    params = dict(hypernet.named_parameters())
    assert all(torch.equal(params[n].detach(), t) for n, t in fixed.items())
    assert all(not torch.equal(p.detach(), q) for p, q in zip(hypernet.base_parameters(), base_before, strict=True))
    guarantee = describe_guarantee(fed, 10)
    assert guarantee["epsilon"] == client_level_epsilon(1.0, 0.5, 10, 1e-5)
    assert "only the base adapters learn" in guarantee["text"]
    assert "only the base" not in describe_guarantee(FederationConfig(shared_policy="dp"), 10)["text"]
    with pytest.raises(ConfigError, match="dp_scope"):
        FederationConfig(dp_scope="heads")


def test_no_noise_states_no_finite_epsilon_and_the_ledger_accepts_it():
    from chaincode.records import check_guarantee
    from hyperfed.federation.privacy import forget_guarantee

    fed = FederationConfig(shared_policy="dp", dp_noise_multiplier=0.0, sample_rate=0.5)
    stated = forget_guarantee(fed, 10, replays=False, participations=3)
    assert stated["epsilon"] is None and stated["epsilon_known_participation"] is None
    assert "∞" in stated["text"]
    assert check_guarantee(json.dumps(stated, allow_nan=False))["epsilon"] is None
    exact = forget_guarantee(fed, 10, replays=True)
    assert exact["guarantee"] == "exact" and "fresh DP noise" in exact["text"]
