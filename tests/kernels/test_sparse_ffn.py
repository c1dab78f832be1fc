"""The sparse FFN formulations (native FFI kernel, pure-JAX loop) against the plain-jnp
reference on the sparse layout, including capacity overflow, empty cluster lists and experts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi2lab.errors import ConfigError
from pi2lab.ffi import kernel_status, native_available
from pi2lab.kernels.sparse_ffn import (
    cluster_activity,
    sparse_ffn,
    sparse_ffn_reference,
)
from pi2lab.kernels.sparse_plan import ClusterPlan
from pi2lab.model.params import merge_ffn, split_ffn

D, F = 40, 96
IMPLS = ["loop", "native"] if native_available() else ["loop"]


def layer(seed, hot, c, experts=None):
    """One layer's FFN in the sparse layout (and the whole matrices it came from)."""
    rng = np.random.default_rng(seed)
    shape = (F, D) if experts is None else (experts, F, D)
    dense = {
        k: jnp.asarray(rng.normal(size=shape) * 0.3, jnp.float32) for k in ("gate", "up", "down")
    }
    return split_ffn({"layers": [dense]}, [hot], [c])["layers"][0], dense


kernel = jax.jit(sparse_ffn, static_argnames=("plan", "kind", "threshold", "impl"))


@settings(max_examples=40, deadline=None)
@given(
    hot=st.sampled_from([0, 16, 48, 80, 96]),
    c=st.sampled_from([1, 2, 8, 16]),
    density=st.floats(0.0, 1.0),
    capacity_share=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
    kind=st.sampled_from(["relu", "drelu", "silu", "fatrelu"]),
    impl=st.sampled_from(IMPLS),
)
def test_matches_reference_including_overflow(hot, c, density, capacity_share, seed, kind, impl):
    p, _ = layer(seed, hot, c)
    rng = np.random.default_rng(seed)
    nc = (F - hot) // c
    active = jnp.asarray(rng.random(nc) < density)
    plan = ClusterPlan(hot=hot, cluster_size=c, capacity=int(capacity_share * nc))
    x = jnp.asarray(rng.normal(size=D), jnp.float32)
    got = kernel(x, p, active, plan=plan, kind=kind, threshold=0.1, impl=impl)
    want = sparse_ffn_reference(x, p, active, plan, kind, 0.1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("capacity", [0, 3, 10])
def test_oracle_clusters_reproduce_dense_ffn(capacity, impl):
    p, dense = layer(3, 16, 8)
    x = jnp.asarray(np.random.default_rng(3).normal(size=D), jnp.float32)
    act = jax.nn.relu(dense["gate"] @ x) * jax.nn.relu(dense["up"] @ x)
    plan = ClusterPlan(hot=16, cluster_size=8, capacity=capacity)
    active = cluster_activity(act != 0, plan)
    assert 3 < int(active.sum()) < active.size  # capacity 3 overflows
    got = kernel(x, p, active, plan=plan, kind="drelu", impl=impl)
    np.testing.assert_allclose(np.asarray(got), np.asarray(act @ dense["down"]), atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_no_active_clusters_is_the_hot_block(impl):
    p, dense = layer(5, 32, 16)
    x = jnp.asarray(np.random.default_rng(5).normal(size=D), jnp.float32)
    plan = ClusterPlan(hot=32, cluster_size=16, capacity=4)
    got = kernel(x, p, jnp.zeros(4, bool), plan=plan, kind="silu", impl=impl)
    want = (jax.nn.silu(dense["gate"][:32] @ x) * (dense["up"][:32] @ x)) @ dense["down"][:32]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_expert_index_reads_the_right_expert(impl):
    p, dense = layer(4, 32, 16, experts=3)
    x = jnp.asarray(np.random.default_rng(4).normal(size=D), jnp.float32)
    plan = ClusterPlan(hot=32, cluster_size=16, capacity=4)
    active = jnp.asarray([True, False, True, True])
    for e in range(3):
        one = split_ffn({"layers": [{k: v[e] for k, v in dense.items()}]}, [32], [16])
        got = kernel(x, p, active, plan=plan, kind="relu", expert=jnp.int32(e), impl=impl)
        want = sparse_ffn_reference(x, one["layers"][0], active, plan, "relu")
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)


def test_split_and_merge_round_trip():
    p, dense = layer(6, 24, 8)
    assert p["hot_gate"].shape == (24, D) and p["cold_down"].shape == (9, 8, D)
    merged = merge_ffn({"layers": [p]})["layers"][0]
    for k in dense:
        np.testing.assert_array_equal(np.asarray(merged[k]), np.asarray(dense[k]))
    resplit = split_ffn({"layers": [p]}, [16], [16])["layers"][0]  # re-planned
    assert resplit["cold_gate"].shape == (5, 16, D)


def test_split_refuses_clusters_that_do_not_tile():
    with pytest.raises(ConfigError, match="88 cold neurons"):
        layer(0, 8, 16)


def test_native_is_asked_for_where_it_cannot_run():
    p, _ = layer(7, 16, 8)
    half = {k: v.astype(jnp.bfloat16) for k, v in p.items()}
    plan = ClusterPlan(hot=16, cluster_size=8, capacity=2)
    with pytest.raises(ConfigError, match="float32"):
        sparse_ffn(
            jnp.ones(D, jnp.bfloat16), half, jnp.zeros(10, bool), plan, "relu", impl="native"
        )


def test_kernel_status_names_the_path():
    status = kernel_status()
    assert status["path"] in ("native", "jax") and status["reason"]
    assert (status["path"] == "native") == (native_available() and jax.default_backend() == "cpu")


@pytest.mark.parametrize(
    "plan",
    [
        ClusterPlan(hot=10, cluster_size=16, capacity=1),
        ClusterPlan(hot=100, cluster_size=8, capacity=0),
        ClusterPlan(hot=32, cluster_size=16, capacity=5),
    ],
)
def test_bad_plans(plan):
    with pytest.raises(ConfigError, match="96"):
        plan.check(F)
