"""The sparse bench on small shapes: its figures are consistent (no timing assertions)."""

import numpy as np

from pi2lab.bench.sparse import bench_synthetic, synthetic_masks


def test_synthetic_masks_have_the_requested_density():
    for kind in ("coactivated", "independent"):
        masks = synthetic_masks(kind, 1024, 0.1, 500)
        assert masks.shape == (500, 1024) and abs(masks.mean() - 0.1) < 0.02


def test_synthetic_bench_reports_every_figure():
    row = bench_synthetic(
        4, 1, layers=1, hidden=256, ffn=1024, cluster_size=16, fit_tokens=256, sweep=(4, 16)
    )
    for key in (
        "dense_tokens_per_s",
        "sparse_tokens_per_s",
        "sparse_jax_loop_tokens_per_s",
        "speedup",
        "bytes_bound_speedup",
        "fraction_of_bound",
        "breakdown",
        "formulations",
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
    sizes = [r["cluster_size"] for r in row["cluster_sweep"]]
    assert sizes == [4, 16]
    for r in row["cluster_sweep"]:
        co, freq = r["coactivation_order"], r["frequency_order"]
        assert 0 < co["clusters_active_share"] <= 1 and 0 < freq["clusters_active_share"] <= 1
        assert r["ffn_loop_ms"] > 0
    # bigger clusters: fewer of them active, more wasted neurons
    small, big = row["cluster_sweep"]
    assert (
        big["coactivation_order"]["firing_share_of_computed"]
        < (small["coactivation_order"]["firing_share_of_computed"])
    )
    np.testing.assert_array_less(0, row["formulations"]["neurons_computed"])
