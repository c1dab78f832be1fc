"""The expert-aware cache: an MoE layer's cache shared among its experts by popularity."""

import numpy as np
import pytest

from pi2lab.engine.offload import OffloadConfig
from pi2lab.errors import ConfigError
from pi2lab.policies import LRU, ExpertAware, Segmented


def test_capacities_follow_popularity_and_keep_each_layers_total():
    policy = ExpertAware(popularity=((6, 2, 0, 0), (1, 1, 1, 1)))
    caps = policy.capacities(per_ffn=4, units=10)
    assert caps == [10, 6, 0, 0, 4, 4, 4, 4]  # layer-major, as the flash layout's files
    assert sum(caps[:4]) == sum(caps[4:]) == 16
    assert policy.shape == (2, 4)


def test_from_routed_counts_each_expert():
    routed = np.zeros((2, 5, 3), bool)  # [L, N, E]
    routed[0, :, 1] = True
    routed[1, :2, 2] = True
    policy = ExpertAware.from_routed(routed, inner="lru")
    assert policy.popularity == ((0.0, 5.0, 0.0), (0.0, 0.0, 2.0))
    assert ExpertAware.from_routed(routed.sum(1)) == ExpertAware(popularity=policy.popularity)


def test_each_expert_runs_the_inner_policy():
    policy = ExpertAware(popularity=((1, 2),))
    assert OffloadConfig(policy=policy).policy_for(100, 40) == Segmented(
        hot_units=20, hot_fraction=0.5
    )
    lru = ExpertAware(popularity=((1, 2),), inner="lru")
    assert OffloadConfig(policy=lru).policy_for(100, 40) == LRU()


@pytest.mark.parametrize(
    ("popularity", "inner", "match"),
    [
        ((), "segmented", "one row per layer"),
        (((1, 2), (1,)), "segmented", "lengths \\[2, 1\\]"),
        (((1, -2),), "segmented", "finite and >= 0"),
        (((1, float("nan")),), "segmented", "finite and >= 0"),
        (((1, 2),), "mru", "cache policy 'mru'"),
    ],
)
def test_bad_popularity_is_refused(popularity, inner, match):
    with pytest.raises(ConfigError, match=match):
        ExpertAware(popularity=popularity, inner=inner)
