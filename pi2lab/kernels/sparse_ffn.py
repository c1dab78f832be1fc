"""Neuron-cluster sparse FFN for single-token decode.

Neurons are in hot-first order (see :mod:`pi2lab.predict.reorder`) and stored in the sparse
layout (:func:`sparse_layout`): the hot block ``[H, D]`` as arrays of its own,
computed every token, and the cold neurons cluster-major ``[NC, C, D]``, of which only the
clusters the predictor marks active are computed. Nothing is sliced out of a larger matrix
inside the step (XLA:CPU copies such slices before a dot).

Two formulations compute the same thing (``impl``):
  * ``"native"``: one XLA FFI call per FFN (:mod:`pi2lab.ffi`) that reads the hot
    block and the active clusters in place on all cores and skips the down row of every
    neuron whose activation is zero. CPU only; float32 or quantized weights (int8/int4,
    :mod:`pi2lab.quant`).
  * ``"loop"``: pure JAX, a loop over the active clusters reading each ``[C, D]`` in place;
    XLA runs it on one core. Used on other backends and where the native kernels are absent.
``"auto"`` picks native where it can run.

The loop's index buffer has a static size, ``capacity``; when more clusters are active it falls
back to a masked dense pass that computes exactly the same neurons, so the result never
depends on the capacity, only the speed does. The native kernel reads the cluster mask itself
and has no capacity.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.config import Activation
from pi2lab.errors import ConfigError
from pi2lab.ffi import ACTIVATIONS, native_available
from pi2lab.kernels.sparse_plan import ClusterPlan, SparsePlan
from pi2lab.model.layers import ffn_activation, ffn_blocks, rows_in, rows_out
from pi2lab.model.params import split_ffn
from pi2lab.quant.format import BITS
from pi2lab.quant.ops import is_quantized

Impl = Literal["auto", "native", "loop"]


def sparse_layout(params: dict, plan: SparsePlan) -> dict:
    """``params`` with the FFN in ``plan``'s sparse layout, the one :func:`sparse_ffn` reads:
    returned as they are when already so, else split once (a copy of the FFN weights; drop the
    old ``params``)."""
    hot = [lp.hot for lp in plan.layers]
    return split_ffn(params, hot, [lp.cluster_size for lp in plan.layers])


def cluster_activity(active: jax.Array, plan: ClusterPlan) -> jax.Array:
    """Neuron mask ``[F]`` -> cold-cluster mask ``[NC]`` (a cluster is active if any neuron is)."""
    cold = active[plan.hot :]
    return cold.reshape(-1, plan.cluster_size).any(axis=-1)


def _expert(w, expert: jax.Array | None, lead: int):
    """``w`` itself, or expert ``expert`` of ``w [E, ...]`` (``lead`` = rank without E)."""
    if expert is None or w.ndim == lead:
        return w
    return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, expert, 0, keepdims=False), w)


def _hot(x, p, kind, threshold, expert):
    g, u, d = (_expert(p[f"hot_{k}"], expert, 2) for k in ("gate", "up", "down"))
    if g.shape[0] == 0:
        return jnp.zeros(x.shape[-1], jnp.float32)
    h = ffn_activation(rows_in(x, g), rows_in(x, u), kind, threshold)
    return rows_out(h, d).astype(jnp.float32)


def _loop(x, p, idx, count, kind, threshold, expert):
    """Hot block, then a loop over the first ``count`` clusters of ``idx`` (one core)."""
    cg, cu, cd = (p[f"cold_{k}"] for k in ("gate", "up", "down"))

    def body(i, acc):
        j = idx[i]
        at = (j,) if expert is None else (expert, j)
        rows = lambda w: jax.tree.map(lambda a: a[at], w)  # [C, D]
        h = ffn_activation(rows_in(x, rows(cg)), rows_in(x, rows(cu)), kind, threshold)
        return acc + rows_out(h, rows(cd)).astype(jnp.float32)

    hot = _hot(x, p, kind, threshold, expert)
    return hot if idx.size == 0 else jax.lax.fori_loop(0, count, body, hot)


def _native(x, p, active_clusters, kind, threshold, expert):
    """The whole FFN in one FFI call (see ``pi2lab/kernels/native/sparse_ffn.cc``); it reads
    the cluster mask itself, so it needs no index buffer and has no capacity."""
    weights = [p[f"{part}_{k}"] for part in ("hot", "cold") for k in ("gate", "up", "down")]
    args = [
        x.astype(jnp.float32),
        jnp.int32(0) if expert is None else expert.astype(jnp.int32),
        active_clusters.astype(bool),
    ]
    attrs = {"kind": np.int32(ACTIVATIONS[kind]), "threshold": np.float32(threshold)}
    target = "pi2lab_sparse_ffn_f32"
    if is_quantized(weights[0]):  # q and scales of each, and how many bits
        target, attrs["bits"] = "pi2lab_qsparse_ffn", np.int32(BITS[weights[0].kind])
        weights = [a for w in weights for a in (w.q, w.scales)]
    call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(x.shape, jnp.float32))
    return call(*args, *weights, **attrs)


def resolve_impl(impl: Impl, p: dict) -> Literal["native", "loop"]:
    """The formulation ``impl`` names for layer weights ``p``: ``auto`` is native where the
    extension is built and the weights are float32 or quantized (the loop otherwise)."""
    f32 = all(
        is_quantized(v) or v.dtype == jnp.float32
        for k, v in p.items()
        if k.startswith(("hot_", "cold_"))
    )
    if impl == "native" and not (native_available() and f32):
        raise ConfigError(
            "impl='native': the native kernels are not built or the weights are neither "
            "float32 nor quantized; expected impl='auto' or 'loop' (see `pi2lab info --kernels`)"
        )
    if impl == "auto":
        return "native" if native_available() and f32 else "loop"
    return impl


def sparse_ffn(
    x: jax.Array,
    p: dict,
    active_clusters: jax.Array,
    plan: ClusterPlan,
    kind: Activation,
    threshold: float = 0.0,
    expert: jax.Array | None = None,
    impl: Impl = "auto",
) -> jax.Array:
    """FFN output ``[D]`` for one token ``x [D]``, computing the hot block and active clusters.

    Args:
      p: one layer's parameters in the sparse layout (``hot_* [H, D]``, ``cold_* [NC, C, D]``;
        MoE: a leading ``[E]`` and ``expert`` an int32 index).
      active_clusters: ``[NC]`` bool, the cold clusters to compute.
      impl: ``native`` (one FFI call, CPU), ``loop`` (pure JAX) or ``auto``.
    """
    use = resolve_impl(impl, p)
    if use == "native":
        native = lambda: _native(x, p, active_clusters, kind, threshold, expert)
        loop = lambda: _capped_loop(x, p, active_clusters, plan, kind, threshold, expert)
        # the FFI target exists for the CPU only; other backends lower the loop
        return jax.lax.platform_dependent(cpu=native, default=loop).astype(x.dtype)
    return _capped_loop(x, p, active_clusters, plan, kind, threshold, expert).astype(x.dtype)


def _capped_loop(x, p, active_clusters, plan, kind, threshold, expert):
    """The loop over at most ``plan.capacity`` active clusters, or masked dense beyond."""
    nc = p["cold_gate"].shape[-3]
    count = jnp.sum(active_clusters, dtype=jnp.int32)
    if nc == 0 or plan.capacity == 0:
        idx = jnp.zeros(0, jnp.int32)
    else:
        idx = jnp.nonzero(active_clusters, size=plan.capacity, fill_value=0)[0].astype(jnp.int32)

    def within(_):
        return _loop(x, p, idx, jnp.minimum(count, plan.capacity), kind, threshold, expert)

    def masked_dense(_):
        # every neuron with the others zeroed: the same neurons at dense speed
        return sparse_ffn_reference(x, p, active_clusters, plan, kind, threshold, expert)

    if nc == 0:
        return within(None)
    return jax.lax.cond(count <= plan.capacity, within, masked_dense, None)


def sparse_ffn_reference(
    x: jax.Array,
    p: dict,
    active_clusters: jax.Array,
    plan: ClusterPlan,
    kind: Activation,
    threshold: float = 0.0,
    expert: jax.Array | None = None,
) -> jax.Array:
    """Plain-jnp reference: all neurons computed, those outside hot and active clusters zeroed.
    ``p`` in either layout; each block is computed where it lies (no concatenated copy)."""
    mask = jnp.concatenate(
        [jnp.ones(plan.hot, bool), jnp.repeat(active_clusters, plan.cluster_size)]
    )
    out, start = jnp.zeros(x.shape[-1], jnp.float32), 0
    for block in ffn_blocks(p):
        gate, up, down = (_expert(w, expert, 2) for w in block)
        n = gate.shape[0]
        h = ffn_activation(rows_in(x, gate), rows_in(x, up), kind, threshold)
        h = h * mask[start : start + n]
        out, start = out + rows_out(h, down).astype(jnp.float32), start + n
    return out
