import pytest

from hyperfed.federation import participates, poisson_sample
from hypernet.errors import ConfigError


def test_rate_one_samples_everyone_in_order():
    ids = ["b", "a", "c"]
    assert poisson_sample(0, 5, ids, 1.0) == ids


def test_sampling_rate_is_respected_and_deterministic():
    ids = [f"client-{i}" for i in range(2000)]
    first = poisson_sample(7, 3, ids, 0.25)
    assert first == poisson_sample(7, 3, ids, 0.25)
    assert 0.22 < len(first) / len(ids) < 0.28
    assert first != poisson_sample(7, 4, ids, 0.25)  # rounds differ
    assert first != poisson_sample(8, 3, ids, 0.25)  # seeds differ


def test_removing_a_client_never_changes_who_else_is_sampled():
    ids = [f"c{i}" for i in range(50)]
    for round_ in range(1, 20):
        with_all = poisson_sample(1, round_, ids, 0.3)
        without = poisson_sample(1, round_, [c for c in ids if c != "c7"], 0.3)
        assert without == [c for c in with_all if c != "c7"]


def test_bad_rate_is_a_config_error():
    with pytest.raises(ConfigError, match="sample rate"):
        participates(0, 1, "a", 0.0)
