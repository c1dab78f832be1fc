"""Cost model and planner: the max() terms, the MILP against brute force, budgets, and a plan
the offload engine runs."""

import itertools

import jax
import numpy as np
import pytest

import pi2lab as pl
from pi2lab.budget import MemoryBudget
from pi2lab.convert import convert
from pi2lab.engine.offload import OffloadEngine
from pi2lab.engine.sparse import SparseDecoder
from pi2lab.errors import BudgetError, ConfigError
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.plan.cost import LayerStats, ModelStats, PlanChoice, envelope, token_seconds
from pi2lab.plan.planner import plan
from pi2lab.plan.stats import default_prompts, layout_stats, plan_layout, record_requests
from pi2lab.storage.layout import open_layout
from tests.conftest import round_profile, tiny_config

PROFILE = round_profile(
    {(4096, 1): 100.0, (1 << 20, 1): 1000.0, (4096, 2): 150.0, (1 << 20, 2): 1500.0},
    ram_bytes=10**10,
    memory_gbs=10.0,
    sequential_mbs=1000.0,
)


def layer(units=100, needed=40.0, curve=(0.0, 0.5, 0.8, 0.95, 1.0), resident=10**6):
    caps = tuple(int(units * k / (len(curve) - 1)) for k in range(len(curve)))
    return LayerStats(
        units=units,
        unit_bytes=4096,
        needed=needed,
        resident_bytes=resident,
        capacities=caps,
        hit_rates={"lru": curve, "segmented-0.5": curve},
    )


def stats(*layers):
    return ModelStats(
        name="hand", layers=layers, head_bytes=10**6, fixed_bytes=10**6, staging_bytes=4096 * 64
    )


def test_envelope_is_the_upper_concave_hull():
    xs, ys = envelope([0, 1, 2, 3, 4], [0, 0.2, 0.9, 0.97, 1.0])
    assert list(xs) == [0, 2, 3, 4]  # (1, 0.2) lies under the hull
    np.testing.assert_allclose(ys, [0, 0.9, 0.97, 1.0])


def test_token_seconds_by_hand():
    s = stats(layer())
    none = PlanChoice(policy="lru", pipeline=PipelineConfig(mode="none"))
    t = token_seconds(s, [50], none, PROFILE)  # hit 0.8 at 50 units: 8 misses of 4 KiB
    io = 8 * 4096 / 100e6
    compute = 40 * 4096 / 5e9
    assert t["io"] == pytest.approx(io)
    assert t["total"] == pytest.approx(1e6 / 1e10 + io + compute + 1e6 / 1e10)
    cluster = PlanChoice(policy="lru", pipeline=PipelineConfig(mode="cluster", batch=4))
    t = token_seconds(s, [50], cluster, PROFILE)
    assert t["ffn"] == pytest.approx(max(io, compute) + 4 * 4096 / 5e9)


def test_milp_matches_brute_force_and_respects_the_budget():
    s = stats(layer(), layer(needed=20.0, curve=(0.0, 0.7, 0.9, 0.97, 1.0)))
    cache = 100 * 4096
    budget = s.fixed_bytes + s.staging_bytes + cache
    best = plan(s, PROFILE, budget, cpu_threads=1)
    assert sum(best.layer_units) * 4096 <= cache
    brute = min(
        token_seconds(s, caps, best.choice, PROFILE)["total"]
        for caps in itertools.product(range(0, 101, 5), repeat=2)
        if sum(caps) * 4096 <= cache
    )
    assert 1.0 / best.predicted_tokens_per_s <= brute * (1 + 1e-6)
    bigger = plan(s, PROFILE, budget + 50 * 4096, cpu_threads=1)
    assert bigger.predicted_tokens_per_s >= best.predicted_tokens_per_s


def test_budget_errors_name_the_minimum_and_the_binding_constraint():
    s = stats(layer())
    minimum = s.fixed_bytes + s.staging_bytes
    with pytest.raises(BudgetError, match=f"minimum {minimum} bytes"):
        plan(s, PROFILE, minimum - 1)
    with pytest.raises(BudgetError, match="the memory budget binds"):
        plan(s, PROFILE, minimum + 4096, min_tokens_per_s=1e9)


def test_bad_planner_settings_are_config_errors():
    s = stats(layer(), layer())
    with pytest.raises(ConfigError, match="cpu_threads=0: expected at least 1"):
        plan(s, PROFILE, 10**8, cpu_threads=0)
    with pytest.raises(ConfigError, match="min_tokens_per_s=0.0: expected a speed > 0"):
        plan(s, PROFILE, 10**8, min_tokens_per_s=0.0)


def test_a_plan_runs_on_the_engine_and_keeps_the_tokens(tmp_path):
    cfg = tiny_config(intermediate_size=64, num_layers=3, max_position_embeddings=128)
    model = pl.Model(config=cfg, params=pl.init_params(cfg, jax.random.key(4), std=0.25))
    sparse_plan = SparsePlan.uniform(cfg, hot=16, cluster_size=8, capacity=6)
    from tests.engine.test_offload import random_predictors

    preds = random_predictors(cfg, jax.random.key(5))
    path = convert(
        cfg,
        jax.tree.map(np.asarray, model.params),
        tmp_path / "f",
        cluster_size=4,
        predictors=preds,
        plan=sparse_plan,
    )
    layout = open_layout(path)
    prompt = np.array([5, 6, 7, 8], np.int32)
    masks, _ = record_requests(layout, [prompt], 10)
    s = layout_stats(layout, masks)
    assert [m.shape for m in masks] == [(10, 16)] * 3
    budget = s.fixed_bytes + s.staging_bytes + 20 * layout.stride
    chosen = plan(s, PROFILE, budget)
    assert sum(chosen.layer_units) <= 20
    with OffloadEngine(layout, chosen.offload_config()) as eng:
        assert eng.memory_bytes <= budget
        got = pl.generate(eng, prompt, max_new_tokens=10, engine="powerinfer2", stop_at_eos=False)
    want = pl.generate(
        model,
        prompt,
        max_new_tokens=10,
        engine="sparse",
        sparse=SparseDecoder(plan=sparse_plan, predictors=preds),
        stop_at_eos=False,
    )
    np.testing.assert_array_equal(got.tokens, want.tokens)


def test_plan_layout_adds_a_budget_share_to_the_resident_minimum(tmp_path):
    cfg = tiny_config(intermediate_size=64, num_layers=2, max_position_embeddings=128)
    model = pl.Model(config=cfg, params=pl.init_params(cfg, jax.random.key(6), std=0.25))
    from tests.engine.test_offload import random_predictors

    path = convert(
        cfg,
        jax.tree.map(np.asarray, model.params),
        tmp_path / "f",
        cluster_size=4,
        predictors=random_predictors(cfg, jax.random.key(7)),
        plan=SparsePlan.uniform(cfg, hot=16, cluster_size=8, capacity=6),
    )
    layout = open_layout(path)
    masks, _ = record_requests(layout, default_prompts(layout), 3)
    s = layout_stats(layout, masks)
    chosen, resident_s = plan_layout(layout, 0.5, PROFILE, tokens=3)
    assert chosen.memory_bytes == s.fixed_bytes + s.staging_bytes + int(0.5 * layout.ffn_bytes)
    assert sum(chosen.layer_units) * layout.stride <= 0.5 * layout.ffn_bytes
    assert resident_s > 0
    with pytest.raises(BudgetError, match="below the minimum"):
        plan_layout(layout, MemoryBudget.bytes(1000), PROFILE, tokens=3)
    with pytest.raises(ConfigError, match="3 prompts x 0 tokens"):
        plan_layout(layout, 0.5, PROFILE, tokens=0)


def test_fitted_constants_reproduce_their_runs():
    from pi2lab.plan.cost import calibrate, calibrate_reads

    s = stats(layer(), layer(needed=20.0))
    choice = PlanChoice(policy="lru")
    full = calibrate(s, PROFILE, 0.010, choice)
    assert token_seconds(full, [100, 100], choice, PROFILE)["total"] == pytest.approx(0.010)
    fitted = calibrate_reads(full, PROFILE, 0.030, choice, [25, 25])
    assert fitted.read_overhead_s > 0
    assert token_seconds(fitted, [25, 25], choice, PROFILE)["total"] == pytest.approx(0.030)
    assert token_seconds(fitted, [100, 100], choice, PROFILE)["total"] == pytest.approx(0.010)


def test_plan_cli_refuses_a_missing_layout(tmp_path):
    from tests.test_cli import run_cli

    proc = run_cli(
        "plan",
        "--model",
        str(tmp_path / "nope"),
        "--memory-budget",
        "0.5",
        "--profile",
        "oneplus12",
    )
    assert proc.returncode == 2 and "no flash.json" in proc.stderr.strip()
