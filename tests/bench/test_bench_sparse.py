"""The sparse bench on small shapes: its figures are consistent (no timing assertions)."""

import numpy as np

from pi2lab.bench.sparse import bench_synthetic, sample_cluster_masks, zipf_frequency
from pi2lab.kernels.sparse_ffn import ClusterPlan


def test_zipf_profile_has_the_requested_density():
    freq = zipf_frequency(14336, density=0.1, skew=1.0)
    assert abs(freq.mean() - 0.1) < 1e-3
    assert (np.diff(freq) <= 0).all() and freq[0] == 1.0 and freq[-1] > 0


def test_cluster_masks_follow_the_profile():
    freq = zipf_frequency(512, density=0.1)
    plan = ClusterPlan(hot=64, cluster_size=8, capacity=56)
    masks = sample_cluster_masks(np.random.default_rng(0), freq, plan, 2000)
    cold = freq[64:].reshape(56, 8)
    expected = 1 - np.prod(1 - cold, axis=1)
    np.testing.assert_allclose(masks.mean(0), expected, atol=0.05)


def test_synthetic_bench_reports_every_figure():
    row = bench_synthetic(4, 1, layers=1, hidden=256, ffn=1024, predictor_rank=16)
    for key in (
        "dense_tokens_per_s",
        "sparse_tokens_per_s",
        "speedup",
        "bytes_bound_speedup",
        "fraction_of_bound",
        "breakdown",
        "predictor_ms_separate",
    ):
        assert key in row
    assert row["sparse_mb_per_token"] < row["dense_mb_per_token"]
    assert row["bytes_bound_speedup"] > 1
    assert set(row["breakdown"]) == {
        "predictor_ms",
        "attention_ms",
        "hot_ffn_ms",
        "cold_ffn_ms",
        "other_ms",
        "step_ms",
    }
