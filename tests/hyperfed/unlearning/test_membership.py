"""Loss-threshold membership inference: a tie-safe AUC, checked by hand and on an overfit adapter."""

from __future__ import annotations

import itertools

import pytest
import torch

from hyperfed.unlearning import block_losses, membership_auc
from hypernet import ConfigError, LocalTrainConfig, evaluate_loss, train_local_adapter
from hypernet.base_models import add_lora, tiny_llama
from hypernet.client_training import get_adapter


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run ~10x faster on one thread than on two when the 2 cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _brute_force_auc(members, nonmembers) -> float:
    pairs = list(itertools.product(members, nonmembers))
    return sum(1.0 if m < n else 0.5 if m == n else 0.0 for m, n in pairs) / len(pairs)


@pytest.mark.parametrize(
    "members, nonmembers, expected",
    [
        ([0.1, 0.2, 0.3], [1.0, 2.0], 1.0),  # members all lower: perfect attack
        ([1.0, 2.0], [0.1, 0.2, 0.3], 0.0),  # reversed
        ([1.0, 1.0, 1.0], [1.0, 1.0], 0.5),  # all ties: chance, whichever way ties break
        ([1.0, 2.0, 3.0], [2.0, 4.0], 0.75),  # (1,1) + (½,1) + (0,1) = 4.5 of 6 pairs
        ([2.0], [1.0, 2.0, 3.0], 0.5),  # 0 + ½ + 1 of 3
    ],
)
def test_auc_by_hand(members, nonmembers, expected):
    assert membership_auc(torch.tensor(members), torch.tensor(nonmembers)) == pytest.approx(expected)


def test_auc_matches_pairwise_count_with_many_ties_and_is_antisymmetric():
    g = torch.Generator().manual_seed(0)
    members = torch.randint(0, 6, (37,), generator=g).double()  # few distinct values: many ties
    nonmembers = torch.randint(2, 8, (23,), generator=g).double()
    auc = membership_auc(members, nonmembers)
    assert auc == pytest.approx(_brute_force_auc(members.tolist(), nonmembers.tolist()), abs=1e-12)
    assert membership_auc(nonmembers, members) == pytest.approx(1 - auc, abs=1e-12)
    assert membership_auc(members.float(), nonmembers.numpy()) == pytest.approx(auc)  # any array-like


@pytest.mark.parametrize("bad", [torch.tensor([]), torch.tensor([1.0, float("nan")]), torch.tensor([float("inf")])])
def test_auc_rejects_empty_or_non_finite_losses(bad):
    with pytest.raises(ConfigError):
        membership_auc(bad, torch.tensor([1.0]))
    with pytest.raises(ConfigError):
        membership_auc(torch.tensor([1.0]), bad)


@pytest.fixture(scope="module")
def overfit():
    """An adapter trained hard on 6 random blocks (members); 24 others are non-members."""
    model = add_lora(tiny_llama(hidden_size=64, num_layers=2), rank=4)
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 64, (30, 32), generator=g)  # unlearnable except by heart
    members, nonmembers = blocks[:6], blocks[6:]
    config = LocalTrainConfig(steps=120, lr=1e-2, batch_size=6)
    adapter, _ = train_local_adapter(model, get_adapter(model), members, config)
    return model, adapter, members, nonmembers


def test_block_losses_shape_and_agreement_with_evaluate_loss(overfit):
    model, adapter, members, _ = overfit
    for a in (None, adapter):
        losses = block_losses(model, a, members, batch_size=4)
        assert losses.shape == (6,) and losses.dtype == torch.float64
        assert losses.mean().item() == pytest.approx(evaluate_loss(model, a, members), rel=1e-5)
    with pytest.raises(ConfigError):
        block_losses(model, adapter, members[0])  # 1-D
    with pytest.raises(ConfigError):
        block_losses(model, adapter, members[:, :1])  # nothing to predict


def test_overfit_adapter_is_detected_and_the_base_model_is_not(overfit):
    model, adapter, members, nonmembers = overfit
    trained = membership_auc(block_losses(model, adapter, members), block_losses(model, adapter, nonmembers))
    base = membership_auc(block_losses(model, None, members), block_losses(model, None, nonmembers))
    assert trained == 1.0, trained
    assert 0.2 < base < 0.8, base  # the base model never saw either set
