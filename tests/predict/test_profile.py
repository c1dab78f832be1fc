"""Activation traces and hot-first reordering."""

import dataclasses

import jax
import numpy as np
import pytest

import pi2lab as pl
from pi2lab.predict.profile import ActivationTrace, TraceError, profile, record_trace
from pi2lab.predict.reorder import reorder_model
from tests.conftest import tiny_config

CFG = tiny_config(intermediate_size=60, max_position_embeddings=128)
MOE = dataclasses.replace(CFG, architecture="mixtral", num_experts=3, num_experts_per_tok=2)


def model_of(cfg):
    return pl.Model(config=cfg, params=pl.init_params(cfg, jax.random.key(0), std=0.3))


def test_trace_matches_activations_and_round_trips(tmp_path, rng):
    model = model_of(CFG)
    tokens = rng.integers(0, 97, 100).astype(np.int32)
    trace = profile(model, tokens, chunk=32)
    acts = pl.ffn_activations(model, tokens[:32])
    np.testing.assert_array_equal(trace.active(1)[:32], np.asarray(acts[1]) != 0)
    loaded = ActivationTrace.load(trace.save(tmp_path / "t.npz"))
    np.testing.assert_array_equal(loaded.masks, trace.masks)
    np.testing.assert_array_equal(loaded.counts(), trace.counts())
    assert loaded.counts().shape == (2, 60)
    np.testing.assert_allclose(loaded.sparsity(), 1 - loaded.frequency().mean(-1))
    co = loaded.coactivation(0, np.arange(5))
    fires = loaded.counts()[0, :5] > 0
    np.testing.assert_allclose(np.diag(co)[fires], 1.0)


def test_moe_trace_counts_routed_experts(rng):
    trace = profile(model_of(MOE), rng.integers(0, 97, 40).astype(np.int32))
    assert trace.routed.shape == (2, 40, 3)
    assert (trace.routed.sum(-1) <= 2).all()
    assert trace.counts().shape == (2, 3, 60)
    assert ((trace.sparsity() > 0) & (trace.sparsity() < 1)).all()


def test_reorder_is_hot_first_and_keeps_outputs(rng):
    for cfg in (CFG, MOE):
        model = model_of(cfg)
        trace = profile(model, rng.integers(0, 97, 120).astype(np.int32))
        reordered, _ = reorder_model(model, trace.counts())
        tokens = rng.integers(0, 97, 15)
        np.testing.assert_allclose(
            np.asarray(pl.dense_logits(reordered, tokens)),
            np.asarray(pl.dense_logits(model, tokens)),
            atol=1e-5,
        )
        counts = profile(reordered, trace.tokens).counts()
        assert (np.diff(counts, axis=-1) <= 0).all()  # now sorted, hottest first


def test_bad_trace_files(tmp_path):
    with pytest.raises(TraceError, match="not found"):
        ActivationTrace.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(TraceError, match="not a pi2lab activation trace"):
        ActivationTrace.load(tmp_path / "junk.npz")
    trace = ActivationTrace(
        masks=np.zeros((1, 4, 2), np.uint8), tokens=np.zeros(4, np.int32), neurons=16, meta={}
    )
    path = trace.save(tmp_path / "t.npz")
    data = dict(np.load(path))
    data["meta"] = np.array('{"version": 99, "neurons": 16}')
    np.savez(tmp_path / "v99.npz", **data)
    with pytest.raises(TraceError, match="version 99"):
        ActivationTrace.load(tmp_path / "v99.npz")


def test_record_trace_saves_and_summarises(tmp_path, rng):
    model = model_of(CFG)
    tokens = rng.integers(0, 97, 50).astype(np.int32)
    summary = record_trace(model, tokens, tmp_path / "t.npz", source="random ids")
    loaded = ActivationTrace.load(tmp_path / "t.npz")
    assert summary["out"] == str(tmp_path / "t.npz") and summary["tokens"] == 50
    assert summary["bytes"] == (tmp_path / "t.npz").stat().st_size
    np.testing.assert_allclose(summary["sparsity_per_layer"], loaded.sparsity(), atol=5e-5)
    assert loaded.meta["source"] == "random ids"


def test_no_tokens_to_profile():
    with pytest.raises(pl.ConfigError, match="no tokens to profile"):
        profile(model_of(CFG), np.zeros(0, np.int32))
