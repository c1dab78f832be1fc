"""Cross-layer prefetch: the same tokens with it on and off, reads taken from the pool, its
recall counted, its rows within the budget, bad settings refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pi2lab as pl
from pi2lab.convert import convert
from pi2lab.engine.offload import OffloadConfig, OffloadEngine
from pi2lab.engine.sampling import SamplingKnobs
from pi2lab.errors import ConfigError
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.pipeline.scheduler import PipelineConfig
from tests.engine.test_offload import CONFIGS, PLAN, PROMPT, random_predictors

CFG = CONFIGS["drelu"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    model = pl.Model(config=CFG, params=pl.init_params(CFG, jax.random.key(7), std=0.25))
    out = tmp_path_factory.mktemp("prefetch") / "flash"
    convert(
        CFG,
        jax.tree.map(np.asarray, model.params),
        out,
        cluster_size=4,
        predictors=random_predictors(CFG, jax.random.key(8)),
        plan=SparsePlan.uniform(CFG, **PLAN),
    )
    return out


def _tokens(path, pipeline, engine="powerinfer2", budget=0.3):
    config = OffloadConfig(engine=engine, memory_budget=budget, pipeline=pipeline)
    with OffloadEngine(path, config) as eng:
        tokens = pl.generate(eng, PROMPT, max_new_tokens=12, engine=engine, stop_at_eos=False)
        return tokens.tokens, eng.last


@pytest.mark.parametrize(
    ("engine", "mode", "depth"),
    [("powerinfer2", "cluster", 1), ("powerinfer2", "cluster", 2), ("llmflash", "matrix", 1)],
)
def test_prefetch_keeps_the_tokens_and_reads_ahead(layout, engine, mode, depth):
    off, _ = _tokens(layout, PipelineConfig(mode=mode), engine)
    on, last = _tokens(layout, PipelineConfig(mode=mode, prefetch=depth, prefetch_units=8), engine)
    np.testing.assert_array_equal(on, off)
    assert last.prefetched > 0
    assert last.prefetch_used <= min(last.prefetched, last.prefetch_misses)


def _replayed(layout_path, pipeline, masks):
    """Logits and stats per token with replayed cold-cluster masks ``[T, L, NC]`` whose
    ``ahead`` prediction is the layer's own mask (an exact predictor)."""
    knobs, key = SamplingKnobs.make(), jax.random.key(0)
    config = OffloadConfig(memory_budget=0.0, pipeline=pipeline)
    out = []
    with OffloadEngine(layout_path, config) as eng:
        token, pos = eng.prefill(PROMPT, key, knobs), PROMPT.size
        for m in masks:
            eng.predictors = [{"clusters": jnp.asarray(c), "ahead": c} for c in m]
            token, logits = eng.step(token, pos, key, knobs)
            pos += 1
            out.append((np.asarray(logits), eng.last))
    return out


def test_an_exact_prediction_takes_every_miss_of_later_layers_from_the_pool(layout):
    nc = SparsePlan.uniform(CFG, **PLAN).layers[0].num_clusters(CFG.intermediate_size)
    masks = np.random.default_rng(0).random((4, CFG.num_layers, nc)) < 0.5
    off = _replayed(layout, PipelineConfig(), masks)
    on = _replayed(layout, PipelineConfig(prefetch=1, prefetch_units=64), masks)
    for (want, base), (got, stats) in zip(off, on, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        # budget 0: every unit of layers 1.. is a miss, read ahead, and read once
        assert stats.prefetch_used == stats.prefetch_misses == stats.prefetched > 0
        assert stats.prefetch_misses == sum(stats.units[1:])
        assert stats.bytes_read == base.bytes_read


def test_replayed_masks_without_an_ahead_prediction_are_refused(layout):
    knobs, key = SamplingKnobs.make(), jax.random.key(0)
    config = OffloadConfig(pipeline=PipelineConfig(prefetch=1))
    with OffloadEngine(layout, config) as eng:
        token = eng.prefill(PROMPT, key, knobs)
        nc = eng.plan.layers[0].num_clusters(CFG.intermediate_size)
        eng.predictors = [{"clusters": jnp.ones(nc, bool)} for _ in range(CFG.num_layers)]
        with pytest.raises(ConfigError, match="'ahead' mask"):
            eng.step(token, PROMPT.size, key, knobs)


def test_the_pool_counts_in_the_engine_memory(layout):
    sizes = {}
    for depth in (0, 2):
        pipeline = PipelineConfig(prefetch=depth, prefetch_units=8)
        with OffloadEngine(layout, OffloadConfig(memory_budget=0.5, pipeline=pipeline)) as eng:
            sizes[depth] = (eng.memory_bytes, eng.layout.stride, sum(eng.cache_units))
    (m0, stride, c0), (m2, _, c2) = sizes[0], sizes[2]
    assert m2 - m0 == 2 * 8 * stride  # the share budget is on top of the rest: caches unchanged
    assert c0 == c2


@pytest.mark.parametrize("kw", [{"prefetch": -1}, {"prefetch": 1, "prefetch_units": 0}])
def test_bad_prefetch_settings_are_refused(kw):
    with pytest.raises(ConfigError, match="prefetch"):
        PipelineConfig(**kw)
