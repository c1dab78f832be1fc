"""The quantized kernels (native on every instruction set this CPU has, forced one by one,
and the pure-JAX fallback) against the NumPy reference of the same arithmetic: shapes with and
without whole 256-weight chunks, several tokens, zero activations, cluster lists (empty
included), experts, and the errors for operands that disagree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi2lab.errors import ConfigError
from pi2lab.ffi import kernel_status, native_available, use_isa
from pi2lab.kernels.sparse_ffn import sparse_ffn
from pi2lab.kernels.sparse_plan import ClusterPlan
from pi2lab.model.params import split_ffn
from pi2lab.quant import format as qf
from pi2lab.quant import ops
from tests.quant import reference

native = pytest.mark.skipif(not native_available(), reason="native kernels not built")
BEST = kernel_status().get("quant_isa")
ISAS = ["avx512vnni", "avx2", "portable"]


@pytest.fixture(autouse=True)
def restore_isa():
    yield
    if BEST is not None:
        use_isa(BEST)


def on(isa: str) -> None:
    """Runs the kernels on ``isa``, or skips where this CPU lacks it."""
    if not use_isa(isa):
        pytest.skip(f"this CPU has no {isa}")


def weights(rng, n, k, kind):
    q, s = qf.quantize(rng.normal(size=(n, k)).astype(np.float32), kind)
    return q, s, ops.QArray(jnp.asarray(q), jnp.asarray(s), kind)


qdot = jax.jit(ops.qdot)
qaxpy = jax.jit(ops.qaxpy)


@native
@settings(max_examples=60, deadline=None)
@given(
    t=st.integers(1, 3),
    n=st.integers(1, 40),
    blocks=st.sampled_from([1, 3, 8, 9, 16, 21]),
    kind=st.sampled_from(qf.KINDS),
    isa=st.sampled_from(ISAS),
    seed=st.integers(0, 10_000),
)
def test_qdot_matches_reference(t, n, blocks, kind, isa, seed):
    on(isa)
    rng = np.random.default_rng(seed)
    q, s, w = weights(rng, n, blocks * 32, kind)
    x = rng.normal(size=(t, blocks * 32)).astype(np.float32)
    x[:, :32] *= 0  # an all-zero block (scale 0)
    got = np.asarray(qdot(jnp.asarray(x), w))
    np.testing.assert_allclose(got, reference.qdot(x, q, s, kind), rtol=1e-4, atol=1e-3)


@native
@settings(max_examples=60, deadline=None)
@given(
    t=st.integers(1, 3),
    n=st.integers(1, 40),
    blocks=st.sampled_from([1, 3, 8, 16, 21]),
    kind=st.sampled_from(qf.KINDS),
    isa=st.sampled_from(ISAS),
    zeros=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
)
def test_qaxpy_matches_reference(t, n, blocks, kind, isa, zeros, seed):
    on(isa)
    rng = np.random.default_rng(seed)
    q, s, w = weights(rng, n, blocks * 32, kind)
    x = rng.normal(size=(t, n)).astype(np.float32) * (rng.random((t, n)) >= zeros)
    got = np.asarray(qaxpy(jnp.asarray(x), w))
    np.testing.assert_allclose(got, reference.qaxpy(x, q, s, kind), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", qf.KINDS)
def test_jax_fallback_computes_the_same(kind, monkeypatch):
    rng = np.random.default_rng(0)
    q, s, w = weights(rng, 24, 288, kind)
    x = rng.normal(size=(2, 288)).astype(np.float32)
    a = rng.normal(size=(2, 24)).astype(np.float32)
    monkeypatch.setattr(ops, "native_available", lambda: False)
    np.testing.assert_allclose(
        np.asarray(ops.qdot(jnp.asarray(x), w)), reference.qdot(x, q, s, kind), rtol=1e-4, atol=1e-3
    )
    np.testing.assert_allclose(
        np.asarray(ops.qaxpy(jnp.asarray(a), w)), reference.qaxpy(a, q, s, kind), atol=1e-4
    )


D, F = 96, 128


@native
@settings(max_examples=50, deadline=None)
@given(
    hot=st.sampled_from([0, 16, 64, 128]),
    c=st.sampled_from([1, 4, 16]),
    density=st.floats(0.0, 1.0),
    kind=st.sampled_from(qf.KINDS),
    act=st.sampled_from(["relu", "drelu", "silu", "fatrelu"]),
    isa=st.sampled_from(ISAS),
    experts=st.sampled_from([None, 3]),
    seed=st.integers(0, 10_000),
)
def test_sparse_ffn_matches_reference(hot, c, density, kind, act, isa, experts, seed):
    on(isa)
    rng = np.random.default_rng(seed)
    lead = () if experts is None else (experts,)
    dense = {k: rng.normal(size=(*lead, F, D)).astype(np.float32) for k in ("gate", "up", "down")}
    stored = {k: qf.quantize(w, kind) for k, w in dense.items()}
    layer = {k: ops.QArray(jnp.asarray(q), jnp.asarray(s), kind) for k, (q, s) in stored.items()}
    p = split_ffn({"layers": [layer]}, [hot], [c])["layers"][0]
    nc = (F - hot) // c
    active = rng.random(nc) < density
    e = 0 if experts is None else int(rng.integers(experts))
    x = rng.normal(size=D).astype(np.float32)
    got = sparse_ffn(
        jnp.asarray(x),
        p,
        jnp.asarray(active),
        ClusterPlan(hot=hot, cluster_size=c, capacity=nc),
        act,
        0.1,
        None if experts is None else jnp.int32(e),
        impl="native",
    )
    rows = np.concatenate(
        [np.arange(hot), hot + (np.flatnonzero(active)[:, None] * c + np.arange(c)).ravel()]
    )
    pick = {k: (q[e], s[e]) if experts else (q, s) for k, (q, s) in stored.items()}
    want = reference.sparse_ffn(x, pick, rows.astype(int), kind, 0.1, act)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=2e-3)


@native
@pytest.mark.parametrize("kind", qf.KINDS)
def test_loop_and_native_sparse_ffn_agree(kind):
    rng = np.random.default_rng(1)
    layer = {k: ops.quantize(rng.normal(size=(F, D)), kind) for k in ("gate", "up", "down")}
    p = split_ffn({"layers": [layer]}, [32], [8])["layers"][0]
    active = jnp.asarray(rng.random(12) < 0.5)
    plan = ClusterPlan(hot=32, cluster_size=8, capacity=4)  # overflows into masked dense
    x = jnp.asarray(rng.normal(size=D), jnp.float32)
    run = lambda impl: np.asarray(sparse_ffn(x, p, active, plan, "relu", impl=impl))
    np.testing.assert_allclose(run("loop"), run("native"), rtol=1e-4, atol=1e-4)


def test_unknown_isa_is_refused():
    assert not use_isa("avx9000")


def test_operands_that_disagree_are_named():
    w = ops.quantize(np.ones((4, 64)), "int8")
    with pytest.raises(ConfigError, match="qdot: x has 32 features"):
        ops.qdot(jnp.ones(32), w)
    with pytest.raises(ConfigError, match="qaxpy: x has 3 entries"):
        ops.qaxpy(jnp.ones(3), w)
