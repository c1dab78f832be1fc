"""Neuron-cluster sparse FFN for single-token decode.

Neurons are in hot-first order (see :mod:`pi2lab.predict.reorder`): ``[0, hot)`` is the hot
block, computed densely every token; the rest are cold, grouped into clusters of ``C``
contiguous neurons, and only clusters the predictor marks active are computed. Each active
cluster's gate/up/down rows are read in place with ``dynamic_slice`` inside a loop whose trip
count is the number of active clusters: a gather of rows would materialise a copy, which is
slower than dense under XLA on the CPU.

When more clusters are active than ``capacity`` (the static size of the index buffer), the
kernel falls back to a masked dense pass that computes exactly the same neurons, so the result
never depends on the capacity, only the speed does.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from pi2lab.config import Activation
from pi2lab.errors import ConfigError
from pi2lab.model.layers import ffn_activation


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterPlan:
    """Static layout of one layer's sparse FFN.

    Attributes:
      hot: Neurons ``[0, hot)`` computed densely every token.
      cluster_size: C, cold neurons per cluster; ``F - hot`` must be a multiple of C.
      capacity: Most cold clusters computed sparsely per token; beyond it, masked dense.
    """

    hot: int
    cluster_size: int
    capacity: int

    def num_clusters(self, neurons: int) -> int:
        return (neurons - self.hot) // self.cluster_size

    def check(self, neurons: int, where: str = "layer") -> None:
        cold = neurons - self.hot
        if not 0 <= self.hot <= neurons or self.cluster_size <= 0 or cold % self.cluster_size:
            raise ConfigError(
                f"{where}: hot={self.hot}, cluster_size={self.cluster_size} do not "
                f"tile {neurons} neurons; expected 0 <= hot <= {neurons} and "
                f"{neurons} - hot a multiple of cluster_size"
            )
        if not 0 <= self.capacity <= max(cold // self.cluster_size, 0):
            raise ConfigError(
                f"{where}: capacity={self.capacity}: expected 0..{cold // self.cluster_size} "
                f"(the cold clusters of {neurons} neurons)"
            )


def cluster_activity(active: jax.Array, plan: ClusterPlan) -> jax.Array:
    """Neuron mask ``[F]`` -> cold-cluster mask ``[NC]`` (a cluster is active if any neuron is)."""
    cold = active[plan.hot :]
    return cold.reshape(-1, plan.cluster_size).any(axis=-1)


def _rows(w: jax.Array, expert: jax.Array | None, start, size: int) -> jax.Array:
    """Rows ``[start, start+size)`` of ``w [F, D]`` or of expert ``expert`` of ``w [E, F, D]``."""
    if expert is None:
        return jax.lax.dynamic_slice_in_dim(w, start, size, axis=0)
    return jax.lax.dynamic_slice(w, (expert, start, 0), (1, size, w.shape[-1]))[0]


def sparse_ffn(
    x: jax.Array,
    gate: jax.Array,
    up: jax.Array,
    down: jax.Array,
    active_clusters: jax.Array,
    plan: ClusterPlan,
    kind: Activation,
    threshold: float = 0.0,
    expert: jax.Array | None = None,
) -> jax.Array:
    """FFN output ``[D]`` for one token ``x [D]``, computing the hot block and active clusters.

    Args:
      gate, up, down: neuron-major ``[F, D]`` (or ``[E, F, D]`` with ``expert`` an int32 index).
      active_clusters: ``[NC]`` bool, the cold clusters to compute.
    """
    c, f = plan.cluster_size, gate.shape[-2]
    count = jnp.sum(active_clusters, dtype=jnp.int32)

    def block(start, size, mask=None):
        rows = functools.partial(_rows, expert=expert, start=start, size=size)
        h = ffn_activation(rows(gate) @ x, rows(up) @ x, kind, threshold)
        return (h if mask is None else h * mask) @ rows(down)

    def hot_and_clusters(_):
        # dynamic_slice, not a static slice: XLA copies a static slice of a parameter first
        out = block(0, plan.hot) if plan.hot else jnp.zeros(x.shape[-1], x.dtype)
        if plan.capacity == 0:
            return out
        idx = jnp.nonzero(active_clusters, size=plan.capacity, fill_value=0)[0]  # [capacity]
        return jax.lax.fori_loop(
            0, count, lambda i, acc: acc + block(plan.hot + idx[i] * c, c), out
        )

    def masked_dense(_):
        # whole matrices with the other neurons zeroed: the same neurons at dense speed
        # (slicing the cold part off would make XLA copy it)
        mask = jnp.concatenate([jnp.ones(plan.hot, bool), jnp.repeat(active_clusters, c)])
        return block(0, f, mask)

    if plan.num_clusters(f) == 0:
        return hot_and_clusters(None).astype(x.dtype)
    out = jax.lax.cond(count <= plan.capacity, hot_and_clusters, masked_dense, None)
    return out.astype(x.dtype)


def sparse_ffn_reference(
    x: jax.Array,
    gate: jax.Array,
    up: jax.Array,
    down: jax.Array,
    active_clusters: jax.Array,
    plan: ClusterPlan,
    kind: Activation,
    threshold: float = 0.0,
) -> jax.Array:
    """Plain-jnp reference: all neurons computed, those outside hot and active clusters zeroed."""
    mask = jnp.concatenate(
        [jnp.ones(plan.hot, bool), jnp.repeat(active_clusters, plan.cluster_size)]
    )
    h = ffn_activation(gate @ x, up @ x, kind, threshold) * mask
    return h @ down
