"""The cluster kernel against its plain-jnp reference, including capacity overflow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi2lab.errors import ConfigError
from pi2lab.kernels.sparse_ffn import (
    ClusterPlan,
    cluster_activity,
    sparse_ffn,
    sparse_ffn_reference,
)

D, F = 40, 96


def weights(seed, experts=None):
    rng = np.random.default_rng(seed)
    shape = (F, D) if experts is None else (experts, F, D)
    return [jnp.asarray(rng.normal(size=shape) * 0.3, jnp.float32) for _ in range(3)]


kernel = jax.jit(sparse_ffn, static_argnames=("plan", "kind", "threshold"))


@settings(max_examples=30, deadline=None)
@given(
    hot=st.sampled_from([0, 16, 32, 96]),
    c=st.sampled_from([8, 16]),
    density=st.floats(0.0, 1.0),
    seed=st.integers(0, 1000),
    kind=st.sampled_from(["relu", "drelu", "silu", "fatrelu"]),
)
def test_matches_reference_including_overflow(hot, c, density, seed, kind):
    gate, up, down = weights(seed)
    rng = np.random.default_rng(seed)
    nc = (F - hot) // c
    active = jnp.asarray(rng.random(nc) < density)
    plan = ClusterPlan(hot=hot, cluster_size=c, capacity=nc // 3)  # overflows when dense
    x = jnp.asarray(rng.normal(size=D), jnp.float32)
    got = kernel(x, gate, up, down, active, plan=plan, kind=kind, threshold=0.1)
    want = sparse_ffn_reference(x, gate, up, down, active, plan, kind, 0.1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


@pytest.mark.parametrize("capacity", [0, 3, 10])
def test_oracle_clusters_reproduce_dense_ffn(capacity):
    gate, up, down = weights(3)
    x = jnp.asarray(np.random.default_rng(3).normal(size=D), jnp.float32)
    act = jax.nn.relu(gate @ x) * jax.nn.relu(up @ x)
    plan = ClusterPlan(hot=16, cluster_size=8, capacity=capacity)
    active = cluster_activity(act != 0, plan)
    assert 3 < int(active.sum()) < active.size  # capacity 3 overflows
    got = kernel(x, gate, up, down, active, plan=plan, kind="drelu")
    np.testing.assert_allclose(np.asarray(got), np.asarray(act @ down), atol=1e-5)


def test_expert_slices_read_the_right_expert():
    gate, up, down = weights(4, experts=3)
    x = jnp.asarray(np.random.default_rng(4).normal(size=D), jnp.float32)
    plan = ClusterPlan(hot=32, cluster_size=16, capacity=4)
    active = jnp.asarray([True, False, True, True])
    for e in range(3):
        got = kernel(x, gate, up, down, active, plan=plan, kind="relu", expert=jnp.int32(e))
        want = sparse_ffn_reference(x, gate[e], up[e], down[e], active, plan, "relu")
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


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
