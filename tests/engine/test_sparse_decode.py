"""Sparse decode with the oracle predictor reproduces dense decode (relu, drelu, MoE)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pi2lab as pl
from pi2lab.engine.decode import decode_step
from pi2lab.engine.prefill import pad, prefill
from pi2lab.engine.sparse import SparseDecoder, sparse_decode_step
from pi2lab.engine.traces import TRACE_COUNTS
from pi2lab.kernels.sparse_ffn import sparse_layout
from pi2lab.kernels.sparse_plan import ClusterPlan, SparsePlan
from pi2lab.predict.profile import profile
from pi2lab.predict.reorder import reorder_model
from tests.conftest import tiny_config

BASE = dict(intermediate_size=64, num_layers=3, max_position_embeddings=128)
CONFIGS = {
    "relu": tiny_config(architecture="llama", ffn_activation="relu", **BASE),
    "drelu": tiny_config(**BASE),
    "moe": tiny_config(architecture="mixtral", num_experts=4, num_experts_per_tok=2, **BASE),
}


def make_model(name):
    cfg = CONFIGS[name]
    return pl.Model(config=cfg, params=pl.init_params(cfg, jax.random.key(5), std=0.25))


def decode_logits(model, tokens, sparse=None):
    """Logits of each decode step after a 3-token prefill (teacher-forced)."""
    cfg = model.config
    params = model.params if sparse is None else sparse.layout(model.params)
    cache = pl.KVCache.zeros(cfg, 64)
    _, cache = prefill(params, cfg, pad(tokens[:3], 16), jnp.int32(3), cache)
    knobs, key, out = pl.SamplingKnobs.make(), jax.random.key(0), []
    for pos in range(3, tokens.size):
        tok = jnp.int32(tokens[pos])
        if sparse is None:
            _, logits, cache = decode_step(params, cfg, cache, tok, jnp.int32(pos), key, knobs)
        else:
            _, logits, cache = sparse.step(params, cfg, cache, tok, jnp.int32(pos), key, knobs)
        out.append(np.asarray(logits))
    return np.stack(out)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_oracle_sparse_equals_dense(name, rng):
    model = make_model(name)
    tokens = rng.integers(0, 97, 20).astype(np.int32)
    trace = profile(model, rng.integers(0, 97, 200))
    model, _ = reorder_model(model, trace.counts())
    plan = SparsePlan.uniform(model.config, hot=16, cluster_size=8, capacity=3)  # overflows
    sparse = SparseDecoder.oracle(model.config, plan)
    dense = decode_logits(model, tokens)
    np.testing.assert_allclose(decode_logits(model, tokens, sparse), dense, atol=1e-4)
    prompt = tokens[:5]
    want = pl.generate(model, prompt, max_new_tokens=12, stop_at_eos=False).tokens
    got = pl.generate(
        model, prompt, max_new_tokens=12, stop_at_eos=False, engine="sparse", sparse=sparse
    ).tokens
    np.testing.assert_array_equal(got, want)


def test_oracle_counts_only_firing_clusters(rng):
    model = make_model("drelu")
    cfg = model.config
    plan = SparsePlan.uniform(cfg, hot=0, cluster_size=4)
    cache = pl.KVCache.zeros(cfg, 32)
    _, _, _, counts = sparse_decode_step(
        sparse_layout(model.params, plan),
        None,
        jnp.float32(0.0),
        cfg,
        plan,
        cache,
        jnp.int32(3),
        jnp.int32(0),
        jax.random.key(0),
        pl.SamplingKnobs.make(),
    )
    assert counts.shape == (3,) and int(counts.min()) > 0 and int(counts.max()) < 16


def test_threshold_is_traced(rng):
    model = make_model("relu")
    cfg = model.config
    f, d = cfg.intermediate_size, cfg.hidden_size
    preds = [
        {
            "fc1": jnp.asarray(rng.normal(size=(5, d)), jnp.float32),
            "b1": jnp.zeros(5),
            "fc2": jnp.asarray(rng.normal(size=(f, 5)), jnp.float32),
            "b2": jnp.zeros(f),
        }
        for _ in range(cfg.num_layers)
    ]
    plan = SparsePlan.uniform(cfg, hot=8, cluster_size=8)
    prompt = np.array([1, 2, 3])
    pl.generate(
        model,
        prompt,
        max_new_tokens=3,
        engine="sparse",
        sparse=SparseDecoder(plan=plan, predictors=preds, threshold=0.0),
    )
    before = TRACE_COUNTS["sparse_decode_step"]
    outs = {
        t: pl.generate(
            model,
            prompt,
            max_new_tokens=6,
            engine="sparse",
            stop_at_eos=False,
            sparse=SparseDecoder(plan=plan, predictors=preds, threshold=t),
        ).tokens.tolist()
        for t in (-1e9, 0.5, 1e9)
    }
    assert TRACE_COUNTS["sparse_decode_step"] == before
    # threshold -inf keeps every neuron: exactly dense
    assert (
        outs[-1e9]
        == pl.generate(model, prompt, max_new_tokens=6, stop_at_eos=False).tokens.tolist()
    )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_native_and_loop_decode_alike(name, rng):
    model = make_model(name)
    tokens = rng.integers(0, 97, 12).astype(np.int32)
    plan = SparsePlan.uniform(model.config, hot=8, cluster_size=8, capacity=5)
    loop = decode_logits(model, tokens, SparseDecoder(plan=plan, impl="loop"))
    auto = decode_logits(model, tokens, SparseDecoder(plan=plan))
    np.testing.assert_allclose(auto, loop, atol=1e-4)


def test_step_refuses_params_not_in_the_sparse_layout():
    model = make_model("relu")
    sparse = SparseDecoder.oracle(model.config)
    with pytest.raises(pl.ConfigError, match="layout"):
        sparse.step(
            model.params,
            model.config,
            pl.KVCache.zeros(model.config, 16),
            jnp.int32(1),
            jnp.int32(0),
            jax.random.key(0),
            pl.SamplingKnobs.make(),
        )


def test_memory_report_holds_one_copy_of_the_ffn():
    model = make_model("drelu")
    sparse = SparseDecoder(plan=SparsePlan.uniform(model.config, hot=16, cluster_size=8))
    mem = sparse.memory(sparse.layout(model.params))
    ffn = sum(model.params["layers"][0][k].nbytes for k in ("gate", "up", "down")) * 3
    assert mem["dense_ffn_bytes"] == 0 and mem["hot_bytes"] + mem["cold_bytes"] == ffn
    assert "hot [16, 16, 16]" in repr(sparse)


def test_plan_must_tile_the_layer():
    model = make_model("relu")
    bad = SparseDecoder(
        plan=SparsePlan(layers=(ClusterPlan(hot=10, cluster_size=8, capacity=2),) * 3)
    )
    with pytest.raises(pl.ConfigError, match="sparse plan layer 0"):
        pl.generate(model, np.array([1, 2]), engine="sparse", sparse=bad)
