"""Sparse decode: the FFN computes only the hot block and the clusters a predictor marks active.

Prefill stays dense (at prompt lengths nearly every neuron fires); each decode step runs the
same attention and KV cache as the dense step, with the FFN replaced by
:func:`pi2lab.kernels.sparse_ffn.sparse_ffn`. The predictor is either trained (low-rank MLPs on
the residual stream, :mod:`pi2lab.predict.predictor`) or the oracle, which reads the true
activations (exact; an upper bound on fidelity, not a speed-up).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.config import ModelConfig
from pi2lab.engine.sampling import SamplingKnobs, sample
from pi2lab.engine.state import KVCache
from pi2lab.engine.traces import traced
from pi2lab.errors import ConfigError
from pi2lab.kernels.sparse_ffn import ClusterPlan, cluster_activity, sparse_ffn
from pi2lab.model.layers import ffn_activation, moe_routing
from pi2lab.model.transformer import forward
from pi2lab.predict.predictor import scores

CLUSTER_SIZES = (64, 32, 16, 8, 4, 2, 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparsePlan:
    """Static layout of sparse decode: one :class:`ClusterPlan` per layer.

    Attributes:
      layers: Hot block, cluster size and cluster capacity of each layer.
    """

    layers: tuple[ClusterPlan, ...]

    @classmethod
    def uniform(
        cls,
        cfg: ModelConfig,
        *,
        hot: int = 0,
        cluster_size: int | None = None,
        capacity: int | None = None,
    ) -> SparsePlan:
        """The same plan in every layer. ``cluster_size`` defaults to the largest of
        64, 32, ... that tiles the cold neurons; ``capacity`` to every cold cluster."""
        cold = cfg.intermediate_size - hot
        c = cluster_size or next(c for c in CLUSTER_SIZES if cold % c == 0)
        plan = ClusterPlan(
            hot=hot, cluster_size=c, capacity=cold // c if capacity is None else capacity
        )
        return cls(layers=(plan,) * cfg.num_layers)

    @classmethod
    def from_frequency(
        cls, frequency: np.ndarray, *, cluster_size: int = 16, hot_min_frequency: float = 0.3
    ) -> SparsePlan:
        """Per-layer plans from hot-first firing frequencies ``[L, F]`` (``[L, E, F]``): the hot
        block covers the neurons firing on at least ``hot_min_frequency`` of tokens (every
        expert's, for MoE), rounded up so the cold rest tiles into clusters."""
        layers = []
        for freq in np.asarray(frequency):
            freq = freq.reshape(-1, freq.shape[-1]).max(0)  # worst expert for MoE
            f = freq.size
            hot = int(np.sum(freq >= hot_min_frequency))
            hot = f - ((f - hot) // cluster_size) * cluster_size
            cold = f - hot
            layers.append(
                ClusterPlan(hot=hot, cluster_size=cluster_size, capacity=cold // cluster_size)
            )
        return cls(layers=tuple(layers))

    def to_json(self) -> list[dict]:
        return [dataclasses.asdict(lp) for lp in self.layers]

    @classmethod
    def from_json(cls, rows: list[dict]) -> SparsePlan:
        return cls(layers=tuple(ClusterPlan(**row) for row in rows))

    def check(self, cfg: ModelConfig) -> None:
        if len(self.layers) != cfg.num_layers:
            raise ConfigError(
                f"sparse plan has {len(self.layers)} layers; the model has {cfg.num_layers}"
            )
        for i, lp in enumerate(self.layers):
            lp.check(cfg.intermediate_size, where=f"sparse plan layer {i}")


def _active_clusters(cfg, lp, p, resid, x, pred, threshold, expert):
    if pred is None:  # oracle: the true activations of the cold neurons
        cold = cfg.intermediate_size - lp.hot

        def rows(w):
            w = w if expert is None else jax.lax.dynamic_index_in_dim(w, expert, 0, False)
            return jax.lax.slice_in_dim(w, lp.hot, lp.hot + cold)

        act = ffn_activation(
            rows(p["gate"]) @ x, rows(p["up"]) @ x, cfg.ffn_activation, cfg.activation_threshold
        )
        active = jnp.concatenate([jnp.ones(lp.hot, bool), act != 0])
    else:
        if expert is not None:
            pred = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, expert, 0, False), pred)
        if "clusters" in pred:  # replayed cold-cluster masks (benchmarks, trace replay)
            return pred["clusters"]
        active = scores(pred, resid) > threshold
    return cluster_activity(active, lp)


def sparse_ffn_hook(cfg: ModelConfig, plan: SparsePlan, predictors, threshold):
    """A forward ``ffn`` hook for one decode token; its second output is the number of active
    cold clusters (summed over routed experts) in that layer."""

    def hook(i, resid, h, p):
        lp, pred = plan.layers[i], None if predictors is None else predictors[i]
        x, r = h[0, 0], resid[0, 0]  # [D]
        run = functools.partial(
            sparse_ffn, plan=lp, kind=cfg.ffn_activation, threshold=cfg.activation_threshold
        )
        if not cfg.is_moe:
            clusters = _active_clusters(cfg, lp, p, r, x, pred, threshold, None)
            out = run(x, p["gate"], p["up"], p["down"], clusters)
            return out[None, None], jnp.sum(clusters)
        weights = moe_routing(h, p["router"], cfg.num_experts_per_tok)[0, 0]  # [E]
        top_w, top_e = jax.lax.top_k(weights, cfg.num_experts_per_tok)
        out, count = jnp.zeros_like(x), jnp.int32(0)
        for j in range(cfg.num_experts_per_tok):
            clusters = _active_clusters(cfg, lp, p, r, x, pred, threshold, top_e[j])
            out = out + top_w[j].astype(x.dtype) * run(
                x, p["gate"], p["up"], p["down"], clusters, expert=top_e[j]
            )
            count = count + jnp.sum(clusters)
        return out[None, None], count

    return hook


@functools.partial(jax.jit, static_argnames=("cfg", "plan"), donate_argnames=("cache",))
def sparse_decode_step(
    params: dict,
    predictors,
    threshold: jax.Array,
    cfg: ModelConfig,
    plan: SparsePlan,
    cache: KVCache,
    token: jax.Array,
    pos: jax.Array,
    key: jax.Array,
    knobs: SamplingKnobs,
):
    """Like :func:`pi2lab.engine.decode.decode_step` with a sparse FFN.

    ``predictors`` is a list of per-layer predictor dicts (``fc1, b1, fc2, b2``, or
    ``clusters``: a replayed ``[NC]`` cold-cluster mask for this token), or None for the
    oracle; ``threshold`` (a traced logit threshold) marks a neuron active when its score
    exceeds it.

    Returns the next token, logits ``[V]``, the cache and active cold clusters per layer ``[L]``.
    """
    traced("sparse_decode_step")
    hook = sparse_ffn_hook(cfg, plan, predictors, threshold)
    logits, cache, counts = forward(params, cfg, token.reshape(1, 1), pos, cache, ffn=hook)
    logits = logits[0, 0]
    return sample(logits, jax.random.fold_in(key, pos), knobs), logits, cache, jnp.stack(counts)


@dataclasses.dataclass(frozen=True, eq=False)
class SparseDecoder:
    """What sparse decode needs beside the model: its plan, predictors and threshold.

    Attributes:
      plan: Static hot/cluster layout per layer.
      predictors: Per-layer predictor parameters, or None for the oracle.
      threshold: Logit threshold of the trained predictors (0 = probability 0.5); traced.
    """

    plan: SparsePlan
    predictors: list | None = None
    threshold: float = 0.0

    @classmethod
    def oracle(cls, cfg: ModelConfig, plan: SparsePlan | None = None) -> SparseDecoder:
        return cls(plan=plan or SparsePlan.uniform(cfg))

    def step(self, params, cfg, cache, token, pos, key, knobs):
        token, logits, cache, _ = sparse_decode_step(
            params,
            self.predictors,
            jnp.float32(self.threshold),
            cfg,
            self.plan,
            cache,
            token,
            pos,
            key,
            knobs,
        )
        return token, logits, cache
