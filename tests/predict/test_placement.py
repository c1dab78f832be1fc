"""Co-activation placement: a permutation that keeps the hot block, leaves outputs unchanged
(dense and MoE), and needs fewer clusters than frequency order on held-out tokens of masks
with co-activated groups; the synthetic activation models and their fit."""

import dataclasses

import jax
import numpy as np
import pytest

import pi2lab as pl
from pi2lab.kernels.predictor import scores
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.predict.placement import (
    cluster_stats,
    coactivation_order,
    coactivation_orders,
    permute_predictors,
)
from pi2lab.predict.predictor import PredictorConfig
from pi2lab.predict.sparsify import load_sparse, sparsify
from pi2lab.predict.synthetic import CoactivationModel, independent_masks, zipf_frequency
from tests.conftest import tiny_config

PC = PredictorConfig(steps=20, min_rank=4, max_rank=8)


def planted(tokens: int, groups: int = 12, size: int = 8, seed: int = 0) -> np.ndarray:
    """``[T, groups * size]`` masks: each group fires whole with its own rate, and the
    neurons of a group are scattered over the index range."""
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.05, 0.4, groups)
    fire = rng.random((tokens, groups)) < rates
    where = rng.permutation(groups * size) // size  # neuron -> group
    return fire[:, where]


def test_order_is_a_permutation_that_keeps_the_hot_block():
    masks = planted(300)
    perm = coactivation_order(masks, hot=16, cluster_size=8)
    assert sorted(perm.tolist()) == list(range(96))
    np.testing.assert_array_equal(perm[:16], np.arange(16))


def test_planted_groups_are_recovered_on_held_out_tokens():
    masks = planted(1200)
    fit, held_out = masks[:600], masks[600:]
    perm = coactivation_order(fit, hot=0, cluster_size=8)
    placed = cluster_stats(held_out[:, perm], 0, 8)
    frequency = cluster_stats(held_out, 0, 8)
    assert placed["firing_share_of_computed"] == pytest.approx(1.0)  # whole groups per cluster
    assert placed["clusters_active_per_token"] < 0.5 * frequency["clusters_active_per_token"]


def test_bad_tiling_is_refused():
    with pytest.raises(pl.ConfigError, match="multiple of cluster_size"):
        coactivation_order(planted(10), hot=5, cluster_size=8)


@pytest.mark.parametrize("moe", [False, True])
def test_coactivation_placement_leaves_outputs_unchanged(tmp_path, rng, moe):
    cfg = tiny_config(intermediate_size=64)
    if moe:
        cfg = dataclasses.replace(cfg, architecture="mixtral", num_experts=3, num_experts_per_tok=2)
    model = pl.Model(config=cfg, params=pl.init_params(cfg, jax.random.key(3), std=0.3))
    tokens = rng.integers(0, 97, 400).astype(np.int32)
    result = sparsify(model, tokens, pc=PC, cluster_size=8, placement="coactivation")
    assert result.placement == "coactivation"
    probe = rng.integers(0, 97, 12).astype(np.int32)
    np.testing.assert_allclose(
        np.asarray(pl.dense_logits(result.model, probe)),
        np.asarray(pl.dense_logits(model, probe)),
        atol=2e-4,
    )
    result.save(tmp_path / "m")
    loaded, sparse = load_sparse(tmp_path / "m", threshold=-1e9)  # every neuron predicted
    want = pl.generate(model, probe[:4], max_new_tokens=6, stop_at_eos=False).tokens
    got = pl.generate(
        loaded, probe[:4], max_new_tokens=6, stop_at_eos=False, engine="sparse", sparse=sparse
    ).tokens
    np.testing.assert_array_equal(got, want)


def test_unknown_placement_is_refused(rng):
    cfg = tiny_config(intermediate_size=64)
    model = pl.Model(config=cfg, params=pl.init_params(cfg, jax.random.key(3)))
    with pytest.raises(pl.ConfigError, match="placement='ripple'"):
        sparsify(model, rng.integers(0, 97, 50), pc=PC, placement="ripple")


def test_predictors_follow_their_neurons(rng):
    d, f, r = 12, 32, 5
    pred = {
        "fc1": rng.normal(size=(r, d)).astype(np.float32),
        "b1": np.zeros(r, np.float32),
        "fc2": rng.normal(size=(f, r)).astype(np.float32),
        "b2": rng.normal(size=f).astype(np.float32),
    }
    perm = rng.permutation(f)
    moved = permute_predictors([pred], perm[None])[0]
    x = rng.normal(size=d).astype(np.float32)
    np.testing.assert_allclose(scores(moved, x), np.asarray(scores(pred, x))[perm], rtol=1e-5)


def test_orders_per_expert_use_only_routed_tokens():
    plan = SparsePlan.uniform(tiny_config(intermediate_size=96, num_layers=1), cluster_size=8)
    masks = np.zeros((400, 2, 96), bool)
    masks[:200, 0] = planted(200)
    masks[200:, 1] = planted(200, seed=1)
    orders = coactivation_orders([masks], plan)
    assert orders.shape == (1, 2, 96)
    for e in range(2):
        assert sorted(orders[0, e].tolist()) == list(range(96))


def test_synthetic_models_have_their_density():
    rng = np.random.default_rng(0)
    model = CoactivationModel(neurons=2048, density=0.1, group_size=32)
    masks = model.sample(rng, 400)
    assert abs(masks.mean() - 0.1) < 0.02
    assert np.all(np.diff(model.frequency()) <= 1e-12)  # hot-first order
    indep = independent_masks(rng, zipf_frequency(2048, density=0.05), 400)
    assert abs(indep.mean() - 0.05) < 0.01


def test_coactivated_masks_need_fewer_clusters_once_placed():
    rng = np.random.default_rng(1)
    masks = CoactivationModel(neurons=1024, density=0.1, group_size=16, noise=0.02).sample(
        rng, 1000
    )
    perm = coactivation_order(masks[:500], 0, 16)
    placed = cluster_stats(masks[500:, perm], 0, 16)["clusters_active_share"]
    assert placed < 0.7 * cluster_stats(masks[500:], 0, 16)["clusters_active_share"]


def test_fit_matches_the_statistics_of_a_planted_trace():
    truth = CoactivationModel(neurons=512, density=0.08, group_size=16, coherence=0.9, noise=0.1)
    masks = truth.sample(np.random.default_rng(2), 1000)
    fitted, report = CoactivationModel.fit(masks, tokens=1000, coherences=(0.5, 0.9))
    for key, want in report["recorded"].items():
        assert abs(report["fitted"][key] - want) < 0.1, key
    assert fitted.density == pytest.approx(masks.mean(), rel=0.01)


@pytest.mark.parametrize(
    "bad", [dict(density=0.0), dict(group_size=0), dict(coherence=1.5), dict(noise=1.0)]
)
def test_bad_synthetic_models_are_refused(bad):
    with pytest.raises(pl.ConfigError, match="CoactivationModel"):
        CoactivationModel(neurons=64, **bad)
