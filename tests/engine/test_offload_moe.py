"""MoE offload on a tiny Mixtral: one bundle file, cache and store per expert, the router on the
compute side, a routed expert's hot block cached and its cold clusters read on demand. The
engines give the tokens of in-memory sparse decode (dense decode for dense-stream), read only
the routed experts' files, and refuse settings that do not fit the layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pi2lab as pl
from pi2lab.budget import MemoryBudget
from pi2lab.convert import convert
from pi2lab.engine.offload import OffloadConfig, OffloadEngine
from pi2lab.engine.prefill import pad, prefill
from pi2lab.engine.sparse import SparseDecoder
from pi2lab.errors import BudgetError, ConfigError
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.policies import ExpertAware
from tests.conftest import tiny_config
from tests.engine.test_offload import PLAN, PROMPT, random_predictors

CFG = tiny_config(
    architecture="mixtral",
    num_experts=4,
    num_experts_per_tok=2,
    intermediate_size=64,
    num_layers=3,
    max_position_embeddings=128,
)
POPULAR = ExpertAware(popularity=((5, 3, 1, 1), (1, 1, 1, 7), (2, 2, 2, 2)))


def moe_predictors(cfg, key):
    """One random predictor per layer and expert, leaves stacked over experts ``[E, ...]``."""
    per = [random_predictors(cfg, k) for k in jax.random.split(key, cfg.num_experts)]
    return [
        jax.tree.map(lambda *a: jnp.stack(a), *(p[i] for p in per)) for i in range(cfg.num_layers)
    ]


@pytest.fixture(scope="module")
def flash(tmp_path_factory):
    model = pl.Model(config=CFG, params=pl.init_params(CFG, jax.random.key(7), std=0.25))
    plan = SparsePlan.uniform(CFG, **PLAN)
    preds = moe_predictors(CFG, jax.random.key(8))
    out = tmp_path_factory.mktemp("moe") / "flash"
    convert(
        CFG,
        jax.tree.map(np.asarray, model.params),
        out,
        cluster_size=4,
        predictors=preds,
        plan=plan,
    )
    return model, SparseDecoder(plan=plan, predictors=preds), out


def test_the_layout_has_a_bundle_file_per_expert(flash):
    _, _, path = flash
    with OffloadEngine(path, OffloadConfig(memory_budget=0.5)) as eng:
        assert len(eng.stores) == 12
        assert eng._store(2, 1).index == 9
        assert eng.layout.file_path(9).name == "layer_002_e1.bin"


@pytest.mark.parametrize(
    ("engine", "pipeline", "policy"),
    [
        ("powerinfer2", None, None),
        ("powerinfer2", PipelineConfig(mode="cluster", depth=2, io_threads=2), None),
        ("powerinfer2", PipelineConfig(mode="none"), None),
        ("powerinfer2", None, POPULAR),
        ("llmflash", None, None),
    ],
)
@pytest.mark.parametrize("budget", [0.0, 0.3, 1.0])
def test_moe_offload_gives_the_tokens_of_in_memory_sparse_decode(
    flash, engine, pipeline, policy, budget
):
    model, sparse, path = flash
    want = pl.generate(
        model, PROMPT, max_new_tokens=16, engine="sparse", sparse=sparse, stop_at_eos=False
    )
    config = OffloadConfig(engine=engine, memory_budget=budget, pipeline=pipeline, policy=policy)
    with OffloadEngine(path, config) as eng:
        got = pl.generate(eng, PROMPT, max_new_tokens=16, engine=engine, stop_at_eos=False)
        assert eng.last.bytes_read > 0 or budget == 1.0
        assert eng.expert_counts.sum() == 15 * CFG.num_layers * CFG.num_experts_per_tok
    np.testing.assert_array_equal(got.tokens, want.tokens)


def test_moe_dense_stream_gives_the_tokens_of_dense_decode(flash):
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


def test_moe_logits_match_in_memory_sparse_decode(flash):
    model, sparse, path = flash
    knobs, key = pl.SamplingKnobs.make(), jax.random.key(0)
    with OffloadEngine(path, OffloadConfig(memory_budget=0.4)) as eng:
        tok = eng.prefill(PROMPT, key, knobs, capacity=64)
        cache = pl.KVCache.zeros(CFG, 64)
        _, cache = prefill(model.params, CFG, pad(PROMPT, 16), jnp.int32(6), cache)
        ref_tok, params = jnp.int32(tok), sparse.layout(model.params)
        for pos in range(6, 14):
            tok, logits = eng.step(tok, pos, key, knobs)
            ref_tok, ref_logits, cache = sparse.step(
                params, CFG, cache, ref_tok, jnp.int32(pos), key, knobs
            )
            np.testing.assert_allclose(logits, ref_logits, atol=1e-4)


def test_only_the_routed_experts_are_read_and_computed(flash):
    _, _, path = flash
    knobs, key = pl.SamplingKnobs.make(), jax.random.key(0)
    with OffloadEngine(path, OffloadConfig(memory_budget=0.0)) as eng:
        tok = eng.prefill(PROMPT, key, knobs, capacity=32)
        for pos in range(6, 10):
            before = eng.expert_counts.copy()
            tok, _ = eng.step(tok, pos, key, knobs)
            routed = eng.expert_counts - before  # [L, E], one token
            assert (routed.sum(1) == CFG.num_experts_per_tok).all()
            read = {
                (eng.layout.files[r.file].layer, eng.layout.files[r.file].expert)
                for r in eng.io.log
            }
            assert read and all(routed[layer, e] == 1 for layer, e in read)
            # nothing cached at 0%: every routed expert's hot block is read and computed
            assert all(u >= 2 * PLAN["hot"] // 4 for u in eng.last.units)


def test_replayed_masks_carry_an_expert_axis(flash):
    model, sparse, path = flash
    rng = np.random.default_rng(0)
    nc = PLAN["capacity"]
    masks = [{"clusters": jnp.asarray(rng.random((4, nc)) < 0.5)} for _ in range(3)]  # [E, NC]
    replay = SparseDecoder(plan=sparse.plan, predictors=masks)
    want = pl.generate(
        model, PROMPT, max_new_tokens=10, engine="sparse", sparse=replay, stop_at_eos=False
    )
    with OffloadEngine(path, OffloadConfig(memory_budget=0.3), predictors=masks) as eng:
        got = pl.generate(eng, PROMPT, max_new_tokens=10, engine="powerinfer2", stop_at_eos=False)
    np.testing.assert_array_equal(got.tokens, want.tokens)


def test_expert_aware_caches_follow_popularity_within_the_even_total(flash):
    _, _, path = flash
    with OffloadEngine(path, OffloadConfig(memory_budget=0.25)) as even:
        caps = even.cache_units
        minimum = even.fixed_bytes + even.staging.rows.nbytes
    with OffloadEngine(path, OffloadConfig(memory_budget=0.25, policy=POPULAR)) as eng:
        assert eng.cache_units == POPULAR.capacities(caps[0], eng.layout.units)
        assert eng.cache_units[:4] == [8, 5, 2, 1]  # 16 units of layer 0 by (5, 3, 1, 1)
        assert sum(eng.cache_units) == sum(caps)
        assert eng.memory_bytes == even.memory_bytes
        pl.generate(eng, PROMPT, max_new_tokens=4, engine="powerinfer2", stop_at_eos=False)
        for store, cap in zip(eng.stores, eng.cache_units, strict=True):
            store.cache.check()
            assert int(np.sum(store.cache.slot_of >= 0)) <= cap
    budget = MemoryBudget.bytes(minimum + 20 * eng.layout.stride)
    with OffloadEngine(path, OffloadConfig(memory_budget=budget, policy=POPULAR)) as eng:
        assert eng.memory_bytes <= budget.total_bytes


def test_bad_moe_settings_are_refused(flash, tmp_path):
    _, _, path = flash
    with pytest.raises(ConfigError, match="expected 12 capacities \\(3 layers x 4 experts\\)"):
        OffloadEngine(path, OffloadConfig(layer_units=(4, 4, 4)))
    with pytest.raises(ConfigError, match="2 layers x 4 experts: expected 3 x 4"):
        OffloadEngine(path, OffloadConfig(policy=ExpertAware(popularity=((1, 1, 1, 1),) * 2)))
    with pytest.raises(ConfigError, match="layer_units and an ExpertAware policy"):
        OffloadEngine(path, OffloadConfig(policy=POPULAR, layer_units=(1,) * 12))
    with OffloadEngine(path, OffloadConfig(memory_budget=0.5)) as eng:
        minimum = eng.fixed_bytes + eng.staging.rows.nbytes
    with pytest.raises(BudgetError, match=f"minimum {minimum} bytes"):
        OffloadEngine(path, OffloadConfig(memory_budget=MemoryBudget.bytes(minimum - 1)))
    dense = tiny_config(intermediate_size=64, num_layers=3, max_position_embeddings=128)
    model = pl.init_params(dense, jax.random.key(1), std=0.25)
    out = convert(dense, jax.tree.map(np.asarray, model), tmp_path / "dense", cluster_size=4)
    with pytest.raises(ConfigError, match="needs an MoE model"):
        OffloadEngine(out, OffloadConfig(engine="dense-stream", policy=POPULAR))
