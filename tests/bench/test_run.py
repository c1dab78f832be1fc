"""bench.run refuses unknown benches and meaningless sizes before measuring anything."""

import pytest

import pi2lab as pl
from pi2lab import bench


@pytest.mark.parametrize(
    ("what", "kwargs", "message"),
    [
        ("turbo", {}, "bench 'turbo': expected one of dense, peer, sparse, offload, planner"),
        ("dense", {"steps": -1}, "steps=-1: expected at least 1"),
        ("offload", {"layers": 0, "steps": None}, "layers=0: expected at least 1"),
    ],
)
def test_bad_bench_requests_are_config_errors(what, kwargs, message):
    with pytest.raises(pl.ConfigError, match=message):
        bench.run(what, **kwargs)
