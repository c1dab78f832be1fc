"""Predictor training, rank choice, metrics and save/load."""

import dataclasses

import jax
import numpy as np
import pytest

import pi2lab as pl
from pi2lab.engine.sparse import SparseDecoder
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.predict.predictor import (
    PredictorConfig,
    Predictors,
    choose_rank,
    collect,
    metrics,
    train_predictors,
)
from tests.conftest import tiny_config

CFG = tiny_config(intermediate_size=64, max_position_embeddings=128)
PC = PredictorConfig(steps=300, batch_size=256, min_rank=4, max_rank=32)


@pytest.fixture(scope="module")
def model():
    return pl.Model(config=CFG, params=pl.init_params(CFG, jax.random.key(0), std=0.3))


@pytest.fixture(scope="module")
def tokens():
    return np.random.default_rng(0).integers(0, 97, 3000).astype(np.int32)


@pytest.fixture(scope="module")
def predictors(model, tokens):
    return train_predictors(model, tokens, PC)


def test_collect_pairs_inputs_with_true_masks(model, tokens):
    inputs, masks = collect(model, tokens[:300], chunk=100)
    assert inputs[0].shape == (300, 48) and masks[1].shape == (300, 64)
    acts = pl.ffn_activations(model, tokens[:100])
    np.testing.assert_array_equal(masks[1][:100], np.asarray(acts[1]) != 0)


def test_rank_follows_the_data():
    rng = np.random.default_rng(1)
    low = (rng.normal(size=(2000, 3)) @ rng.normal(size=(3, 64))) > 0.5  # rank-3 structure
    noise = rng.random((2000, 64)) < 0.3
    pc = PredictorConfig(min_rank=1, max_rank=64)
    assert choose_rank(low, pc) < choose_rank(noise, pc)


def test_calibrated_predictors_reach_the_recall_target(predictors):
    for row in predictors.report["layers"]:  # measured on samples calibration did not see
        assert row["recall"] > 0.95
        assert row["predicted_active"] < 0.95  # still skips neurons
        assert row["precision"] > row["true_active"]  # better than guessing
        assert PC.min_rank <= row["rank"] <= PC.max_rank


def test_threshold_trades_recall_for_active_fraction(predictors, model, tokens):
    inputs, masks = collect(model, tokens[-300:])
    lo = metrics(predictors.layers[0], inputs[0], masks[0], threshold=-2.0)
    hi = metrics(predictors.layers[0], inputs[0], masks[0], threshold=2.0)
    assert lo["recall"] >= hi["recall"] and lo["predicted_active"] > hi["predicted_active"]


def test_save_load_and_decode(tmp_path, predictors, model):
    predictors.save(tmp_path)
    loaded = Predictors.load(tmp_path, CFG)
    assert loaded.ranks == predictors.ranks and loaded.report == predictors.report
    sparse = SparseDecoder(
        plan=SparsePlan.uniform(CFG, hot=16, cluster_size=8), predictors=loaded.layers
    )
    res = pl.generate(model, np.array([3, 4, 5]), max_new_tokens=5, engine="sparse", sparse=sparse)
    assert res.tokens.size == 5


def test_load_rejects_mismatched_model(tmp_path, predictors):
    predictors.save(tmp_path)
    other = dataclasses.replace(CFG, intermediate_size=72)
    with pytest.raises(pl.CheckpointError, match="the model has 72 neurons"):
        Predictors.load(tmp_path, other)
    with pytest.raises(pl.CheckpointError, match="no predictors"):
        Predictors.load(tmp_path / "nowhere", CFG)


def test_moe_sparsify_trains_one_predictor_per_expert(tmp_path, rng):
    from pi2lab.predict.sparsify import load_sparse, sparsify

    cfg = dataclasses.replace(CFG, architecture="mixtral", num_experts=3, num_experts_per_tok=2)
    model = pl.Model(config=cfg, params=pl.init_params(cfg, jax.random.key(2), std=0.3))
    result = sparsify(
        model,
        rng.integers(0, 97, 600).astype(np.int32),
        pc=dataclasses.replace(PC, steps=30),
        cluster_size=8,
    )
    assert result.predictors.layers[0]["fc2"].shape[:2] == (3, 64)  # [E, F, r]
    assert result.frequency.shape == (2, 3, 64)
    result.save(tmp_path / "moe")
    loaded, sparse = load_sparse(tmp_path / "moe", threshold=-1e9)  # every neuron predicted
    prompt = np.array([4, 8, 15, 16])
    want = pl.generate(model, prompt, max_new_tokens=6, stop_at_eos=False).tokens
    got = pl.generate(
        loaded, prompt, max_new_tokens=6, stop_at_eos=False, engine="sparse", sparse=sparse
    ).tokens
    np.testing.assert_array_equal(got, want)


def test_load_for_engine(tmp_path, predictors, model):
    from pi2lab.predict.fidelity import fidelity
    from pi2lab.predict.sparsify import load_for_engine

    path = pl.save_pretrained(model, tmp_path / "m")
    dense, none = load_for_engine(path, "dense")
    assert none is None and dense.config == CFG
    _, oracle = load_for_engine(path, "sparse", cluster_size=3)
    assert oracle.predictors is None  # no predictors beside the model
    with pytest.raises(pl.ConfigError, match="engine='llmflash': expected 'dense' or 'sparse'"):
        load_for_engine(path, "llmflash")
    with pytest.raises(pl.ConfigError, match="0 sequences and 1 thresholds"):
        fidelity(dense, oracle, [], [0.0])
    with pytest.raises(pl.ConfigError, match=r"sequences \[1\] are shorter than 2 tokens"):
        fidelity(dense, oracle, [np.arange(4), np.arange(1)], [0.0])


def test_fidelity_table_has_a_line_per_threshold():
    from pi2lab.predict.fidelity import format_fidelity

    row = {
        "threshold": 0.5,
        "perplexity_dense": 10.0,
        "perplexity_sparse": 11.0,
        "perplexity_increase": 0.1,
        "greedy_agreement": 0.9,
        "cold_clusters_computed": 0.25,
    }
    lines = format_fidelity([row, {**row, "threshold": 1.0}]).splitlines()
    assert lines[0].split()[:3] == ["threshold", "ppl", "dense"] and len(lines) == 3
    assert lines[1].split() == ["0.50", "10.00", "11.00", "+10.00%", "0.900", "0.250"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"steps": 0}, "steps=0: expected an integer >= 1"),
        ({"energy": 2.0}, "energy=2.0: expected 0 < energy <= 1"),
        ({"min_rank": 8, "max_rank": 4}, "min_rank=8, max_rank=4"),
        ({"learning_rate": float("nan")}, "learning_rate=nan"),
        ({"held_out_fraction": 0.0}, "held_out_fraction=0.0"),
        ({"target_recall": 1.5}, "target_recall=1.5"),
    ],
)
def test_unusable_predictor_settings_are_refused(settings, message):
    with pytest.raises(pl.ConfigError, match=message):
        PredictorConfig(**settings)
