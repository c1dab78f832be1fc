"""Budgets hold whatever the engine, policy, precision, budget or model (dense or MoE, whose
caches may be shared among experts by popularity): after decoding, the bytes the engine holds
never exceed a budget in bytes, the cache slots never exceed their share of the FFN for a
budget given as a share, and every cache stays consistent."""

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pi2lab as pl
from pi2lab.budget import MemoryBudget
from pi2lab.convert import convert
from pi2lab.engine.offload import ENGINE_POLICY, ENGINES, OffloadConfig, OffloadEngine
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.policies import ExpertAware
from tests.conftest import tiny_config
from tests.engine.test_offload import PLAN, PROMPT, random_predictors
from tests.engine.test_offload_moe import moe_predictors

SIZES = dict(
    intermediate_size=64, num_layers=3, hidden_size=64, head_dim=16, num_heads=4, num_kv_heads=2
)
CFG = tiny_config(**SIZES)
MOE = tiny_config(architecture="mixtral", num_experts=4, num_experts_per_tok=2, **SIZES)
POLICIES = [None, "lru", "lfu", "window-5", "static-hot", "segmented"]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """f32 and int4 layouts of a dense and an MoE model (``moe-f32``, ``moe-int4``), each with
    the smallest byte budget it opens with."""
    out = {}
    for cfg, predictors in ((CFG, random_predictors), (MOE, moe_predictors)):
        model = pl.Model(config=cfg, params=pl.init_params(cfg, jax.random.key(3), std=0.25))
        params = jax.tree.map(np.asarray, model.params)
        plan, preds = SparsePlan.uniform(cfg, **PLAN), predictors(cfg, jax.random.key(4))
        for dtype in ("f32", "int4"):
            name = f"moe-{dtype}" if cfg.is_moe else dtype
            path = tmp_path_factory.mktemp(name) / "flash"
            convert(cfg, params, path, dtype=dtype, cluster_size=4, predictors=preds, plan=plan)
            with OffloadEngine(path, OffloadConfig(memory_budget=0.5)) as eng:
                out[name] = (path, eng.fixed_bytes + eng.staging.rows.nbytes, eng.layout)
    return out


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(["f32", "int4", "moe-f32", "moe-int4"]),
    engine=st.sampled_from(ENGINES),
    policy=st.sampled_from(POLICIES),
    popularity=st.none()
    | st.lists(st.lists(st.integers(0, 9), min_size=4, max_size=4), min_size=3, max_size=3),
    extra_units=st.integers(0, 60),
    share=st.none() | st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 1.0]),
)
def test_resident_bytes_never_exceed_the_budget(
    layouts, name, engine, policy, popularity, extra_units, share
):
    path, minimum, layout = layouts[name]
    budget = (
        MemoryBudget.bytes(minimum + extra_units * layout.stride)
        if share is None
        else MemoryBudget.share(share)
    )
    if popularity is not None and layout.config.is_moe:  # shared among experts by popularity
        policy = ExpertAware(popularity=popularity, inner=policy or ENGINE_POLICY[engine])
    config = OffloadConfig(engine=engine, memory_budget=budget, policy=policy)
    with OffloadEngine(path, config) as eng:
        pl.generate(eng, PROMPT, max_new_tokens=3, engine=engine, stop_at_eos=False)
        slots = sum(eng.cache_units) * layout.stride
        assert eng.memory_bytes == eng.fixed_bytes + eng.staging.rows.nbytes + slots
        if share is None:
            assert eng.memory_bytes <= minimum + extra_units * layout.stride
        else:
            assert slots <= share * layout.units * layout.stride * len(layout.files)
        for store, cap in zip(eng.stores, eng.cache_units, strict=True):
            store.cache.check()
            assert int(np.sum(store.cache.slot_of >= 0)) <= cap
