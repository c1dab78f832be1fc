"""Offload engines: the tokens of in-memory sparse decode, budgets, faults, no thread leaks."""

import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pi2lab as pl
from pi2lab.budget import MemoryBudget
from pi2lab.convert import convert
from pi2lab.engine.offload import OffloadConfig, OffloadEngine
from pi2lab.engine.sparse import SparseDecoder
from pi2lab.errors import BudgetError, ConfigError, StorageError
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.policies import LRU
from tests.conftest import tiny_config

BASE = dict(intermediate_size=64, num_layers=3, max_position_embeddings=128)
CONFIGS = {
    "relu": tiny_config(architecture="llama", ffn_activation="relu", **BASE),
    "drelu": tiny_config(**BASE),
}
PLAN = dict(hot=16, cluster_size=8, capacity=6)


def random_predictors(cfg, key, rank=12):
    """Untrained low-rank predictors: any fixed predictor must give the same tokens on and off
    flash; these mark roughly half the clusters active."""
    out = []
    for k in jax.random.split(key, cfg.num_layers):
        k1, k2 = jax.random.split(k)
        out.append(
            {
                "fc1": jax.random.normal(k1, (rank, cfg.hidden_size)),
                "b1": jnp.zeros(rank),
                "fc2": jax.random.normal(k2, (cfg.intermediate_size, rank)) * 0.3,
                "b2": jnp.full(cfg.intermediate_size, -0.5),
            }
        )
    return out


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def flash(request, tmp_path_factory):
    cfg = CONFIGS[request.param]
    model = pl.Model(config=cfg, params=pl.init_params(cfg, jax.random.key(7), std=0.25))
    plan = SparsePlan.uniform(cfg, **PLAN)
    preds = random_predictors(cfg, jax.random.key(8))
    params = jax.tree.map(np.asarray, model.params)
    out = tmp_path_factory.mktemp(request.param) / "flash"
    convert(cfg, params, out, cluster_size=4, predictors=preds, plan=plan)
    return model, SparseDecoder(plan=plan, predictors=preds), out


PROMPT = np.array([3, 14, 15, 92, 65, 35], np.int32)


@pytest.mark.parametrize(
    ("engine", "pipeline"),
    [
        ("powerinfer2", None),
        ("powerinfer2", PipelineConfig(mode="cluster", depth=2, io_threads=2)),
        ("powerinfer2", PipelineConfig(mode="none")),
        ("llmflash", None),
    ],
)
@pytest.mark.parametrize("budget", [0.0, 0.3, 1.0])
def test_offload_gives_the_tokens_of_in_memory_sparse_decode(flash, engine, pipeline, budget):
    model, sparse, path = flash
    want = pl.generate(
        model, PROMPT, max_new_tokens=16, engine="sparse", sparse=sparse, stop_at_eos=False
    )
    config = OffloadConfig(engine=engine, memory_budget=budget, pipeline=pipeline)
    with OffloadEngine(path, config) as eng:
        got = pl.generate(eng, PROMPT, max_new_tokens=16, engine=engine, stop_at_eos=False)
        assert eng.last.bytes_read > 0 or budget == 1.0
    np.testing.assert_array_equal(got.tokens, want.tokens)


def test_dense_stream_gives_the_tokens_of_dense_decode(flash):
    model, _, path = flash
    want = pl.generate(model, PROMPT, max_new_tokens=12, stop_at_eos=False)
    got = pl.generate(
        str(path),
        PROMPT,
        max_new_tokens=12,
        engine="dense-stream",
        memory_budget=0.25,
        stop_at_eos=False,
    )
    np.testing.assert_array_equal(got.tokens, want.tokens)


def test_logits_match_in_memory_sparse_decode(flash):
    model, sparse, path = flash
    knobs, key = pl.SamplingKnobs.make(), jax.random.key(0)
    with OffloadEngine(path, OffloadConfig(memory_budget=0.4)) as eng:
        tok = eng.prefill(PROMPT, key, knobs, capacity=64)
        cache = pl.KVCache.zeros(model.config, 64)
        from pi2lab.engine.prefill import pad, prefill

        _, cache = prefill(model.params, model.config, pad(PROMPT, 16), jnp.int32(6), cache)
        ref_tok, params = jnp.int32(tok), sparse.layout(model.params)
        for pos in range(6, 14):
            tok, logits = eng.step(tok, pos, key, knobs)
            ref_tok, ref_logits, cache = sparse.step(
                params, model.config, cache, ref_tok, jnp.int32(pos), key, knobs
            )
            np.testing.assert_allclose(logits, ref_logits, atol=1e-4)


def test_memory_stays_within_a_byte_budget(flash):
    _, _, path = flash
    with OffloadEngine(path, OffloadConfig(memory_budget=0.5)) as eng:
        minimum = eng.fixed_bytes + eng.staging.rows.nbytes
    for budget in (minimum, minimum + 10 * 4096, minimum + 10**6):
        with OffloadEngine(path, OffloadConfig(memory_budget=MemoryBudget.bytes(budget))) as eng:
            assert eng.memory_bytes <= budget
            pl.generate(eng, PROMPT, max_new_tokens=4, engine="powerinfer2")
            for store in eng.stores:
                store.cache.check()
    with pytest.raises(BudgetError, match=f"minimum {minimum} bytes"):
        OffloadEngine(path, OffloadConfig(memory_budget=MemoryBudget.bytes(minimum - 1)))


def test_timeline_and_stats_describe_the_token(flash):
    _, _, path = flash
    with OffloadEngine(path, OffloadConfig(memory_budget=0.25, policy=LRU())) as eng:
        pl.generate(eng, PROMPT, max_new_tokens=3, engine="powerinfer2")
        stages = {e.stage for e in eng.timeline.events}
        threads = {e.thread for e in eng.timeline.events}
        assert {"attention", "compute", "read", "head"} <= stages
        assert threads == {"compute", "io0"}
        assert 0 <= eng.last.io_share < 1
        assert len(eng.last.units) == 3 and all(
            h <= u for h, u in zip(eng.last.hits, eng.last.units, strict=True)
        )
        reads = [e for e in eng.timeline.events if e.stage == "read"]
        assert sum(e.nbytes for e in reads) == eng.last.bytes_read
        assert len(reads) == eng.last.reads


def test_io_error_mid_token_surfaces_and_the_engine_closes_and_reopens(flash, tmp_path):
    _, _, path = flash
    before = threading.active_count()
    bundle = path / "ffn" / "layer_002.bin"
    saved = bundle.read_bytes()
    eng = OffloadEngine(path, OffloadConfig(memory_budget=0.0))
    try:
        knobs, key = pl.SamplingKnobs.make(), jax.random.key(0)
        tok = eng.prefill(PROMPT, key, knobs, capacity=32)
        os.truncate(bundle, 4096)
        with pytest.raises(StorageError, match="layer_002.bin"):
            eng.step(tok, 6, key, knobs)
    finally:
        eng.close()
        bundle.write_bytes(saved)
    assert threading.active_count() == before
    with OffloadEngine(path, OffloadConfig(memory_budget=0.0)) as eng:
        assert pl.generate(eng, PROMPT, max_new_tokens=2, engine="powerinfer2").tokens.size == 2
    assert threading.active_count() == before


def test_bad_settings_are_refused(flash):
    _, _, path = flash
    with pytest.raises(ConfigError, match="engine 'vllm'"):
        OffloadConfig(engine="vllm")
    with pytest.raises(ConfigError, match="share of the FFN bytes"):
        OffloadConfig(memory_budget=1.5)
    with pytest.raises(ConfigError, match="multiples of the layout's unit"):
        OffloadEngine(path, plan=SparsePlan.uniform(CONFIGS["drelu"], hot=2, cluster_size=2))
    with pytest.raises(ConfigError, match="gate-first loading needs one neuron per unit"):
        OffloadEngine(path, OffloadConfig(pipeline=PipelineConfig(gate_first=True)))


@pytest.mark.parametrize("policy", [None, LRU()])
@pytest.mark.parametrize("budget", [0.0, 0.5])
def test_gate_first_gives_the_same_tokens_reading_less(tmp_path, policy, budget):
    # hidden 1024 in f32: a gate row is 4 KiB, so phases are read without alignment padding
    cfg = tiny_config(hidden_size=1024, **BASE)
    model = pl.Model(config=cfg, params=pl.init_params(cfg, jax.random.key(2), std=0.05))
    plan = SparsePlan.uniform(cfg, **PLAN)
    preds = random_predictors(cfg, jax.random.key(3))
    path = convert(
        cfg,
        jax.tree.map(np.asarray, model.params),
        tmp_path / "c1",
        cluster_size=1,
        predictors=preds,
        plan=plan,
    )
    want = pl.generate(
        model,
        PROMPT,
        max_new_tokens=10,
        engine="sparse",
        sparse=SparseDecoder(plan=plan, predictors=preds),
        stop_at_eos=False,
    )
    read = {}
    for gate_first in (False, True):
        pipe = PipelineConfig(gate_first=gate_first, depth=3)
        config = OffloadConfig(memory_budget=budget, pipeline=pipe, policy=policy)
        with OffloadEngine(path, config) as eng:
            got = pl.generate(
                eng, PROMPT, max_new_tokens=10, engine="powerinfer2", stop_at_eos=False
            )
            read[gate_first] = eng.last.bytes_read
            for store in eng.stores:
                store.cache.check()
        np.testing.assert_array_equal(got.tokens, want.tokens)
    assert read[True] < read[False]


def test_layer_units_set_each_cache(flash):
    model, sparse, path = flash
    with OffloadEngine(path, OffloadConfig(layer_units=(0, 5, 16))) as eng:
        assert [s.cache.capacity for s in eng.stores] == [0, 5, 16]
        got = pl.generate(eng, PROMPT, max_new_tokens=8, engine="powerinfer2", stop_at_eos=False)
    want = pl.generate(
        model, PROMPT, max_new_tokens=8, engine="sparse", sparse=sparse, stop_at_eos=False
    )
    np.testing.assert_array_equal(got.tokens, want.tokens)
    with pytest.raises(ConfigError, match="expected 3 capacities in 0..16"):
        OffloadEngine(path, OffloadConfig(layer_units=(1, 2)))
    with OffloadEngine(path, OffloadConfig(memory_budget=0.5)) as eng:
        minimum = eng.fixed_bytes + eng.staging.rows.nbytes
    with pytest.raises(BudgetError, match="neuron cache 12288"):
        OffloadEngine(
            path, OffloadConfig(memory_budget=MemoryBudget.bytes(minimum), layer_units=(1, 1, 1))
        )
