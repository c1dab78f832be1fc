"""The policy registry: one naming scheme, the policies the engine builds."""

import pytest

from pi2lab.engine.offload import OffloadConfig
from pi2lab.errors import ConfigError
from pi2lab.policies import LFU, LRU, Segmented, StaticHot, Window
from pi2lab.policies.registry import make_policy, parse_policy, policy_label


def test_names_build_their_policies():
    kw = dict(units=100, capacity=40)
    assert make_policy("lru", **kw) == LRU()
    assert make_policy("lfu", **kw) == LFU()
    assert make_policy("static-hot", **kw) == StaticHot()
    assert make_policy("window", **kw) == Window(k=5)
    assert make_policy("window-3", **kw) == Window(k=3)
    assert make_policy("segmented", **kw) == Segmented(hot_units=20, hot_fraction=0.5)
    assert make_policy("segmented-0.8", **kw) == Segmented(hot_units=32, hot_fraction=0.8)
    assert make_policy("segmented", **kw, hot_region=2.0) == Segmented(
        hot_units=40, hot_fraction=0.5
    )
    assert make_policy("segmented", units=100, capacity=1) == LRU()  # no room for a hot segment


def test_engine_defaults_come_from_the_registry():
    assert OffloadConfig(engine="llmflash").policy_for(100, 40) == Window(k=5)
    assert OffloadConfig(engine="dense-stream").policy_for(100, 40) == StaticHot()
    assert OffloadConfig(hot_fraction=0.25).policy_for(100, 40) == Segmented(
        hot_units=10, hot_fraction=0.25
    )
    assert OffloadConfig(policy="lfu").policy_for(100, 40) == LFU()


@pytest.mark.parametrize("name", ["LRU", "window5", "segmented-2", "window-0", "lru-3", "mru"])
def test_unknown_names_are_refused(name):
    with pytest.raises(ConfigError, match="cache policy"):
        parse_policy(name)
    with pytest.raises(ConfigError, match="cache policy"):
        OffloadConfig(policy=name)


def test_labels():
    assert [policy_label(n) for n in ("lru", "window", "segmented-0.8", "static-hot")] == [
        "LRU",
        "Window(5)",
        "Segmented (hot 80%)",
        "StaticHot",
    ]
