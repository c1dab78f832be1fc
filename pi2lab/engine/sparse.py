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

from pi2lab.config import ModelConfig
from pi2lab.engine.sampling import SamplingKnobs, sample
from pi2lab.engine.traces import traced
from pi2lab.kernels.predictor import scores
from pi2lab.kernels.sparse_ffn import Impl, cluster_activity, sparse_ffn, sparse_layout
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.model.kv_cache import KVCache
from pi2lab.model.layers import ffn_activation, moe_routing, rows_in
from pi2lab.model.params import FFN_KEYS
from pi2lab.model.transformer import forward


def _active_clusters(cfg, lp, p, resid, x, pred, threshold, expert):
    if pred is None:  # oracle: the true activations of the cold neurons

        def cold(k):  # [NC, C, D] -> [F - hot, D] (quantized: both arrays alike)
            def rows(a):
                a = a if expert is None else jax.lax.dynamic_index_in_dim(a, expert, 0, False)
                return a.reshape(-1, a.shape[-1])

            return jax.tree.map(rows, p[f"cold_{k}"])

        act = ffn_activation(
            rows_in(x, cold("gate")),
            rows_in(x, cold("up")),
            cfg.ffn_activation,
            cfg.activation_threshold,
        )
        active = jnp.concatenate([jnp.ones(lp.hot, bool), act != 0])
    else:
        if expert is not None:
            pred = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, expert, 0, False), pred)
        if "clusters" in pred:  # replayed cold-cluster masks (benchmarks, trace replay)
            return pred["clusters"]
        active = scores(pred, resid) > threshold
    return cluster_activity(active, lp)


def sparse_ffn_hook(cfg: ModelConfig, plan: SparsePlan, predictors, threshold, impl: Impl):
    """A forward ``ffn`` hook for one decode token on sparse-layout parameters; its second
    output is the number of active cold clusters (summed over routed experts) in that layer."""

    def hook(i, resid, h, p):
        lp, pred = plan.layers[i], None if predictors is None else predictors[i]
        x, r = h[0, 0], resid[0, 0]  # [D]
        run = functools.partial(
            sparse_ffn,
            plan=lp,
            kind=cfg.ffn_activation,
            threshold=cfg.activation_threshold,
            impl=impl,
        )
        if not cfg.is_moe:
            clusters = _active_clusters(cfg, lp, p, r, x, pred, threshold, None)
            return run(x, p, clusters)[None, None], jnp.sum(clusters)
        weights = moe_routing(h, p["router"], cfg.num_experts_per_tok)[0, 0]  # [E]
        top_w, top_e = jax.lax.top_k(weights, cfg.num_experts_per_tok)
        out, count = jnp.zeros_like(x), jnp.int32(0)
        for j in range(cfg.num_experts_per_tok):
            clusters = _active_clusters(cfg, lp, p, r, x, pred, threshold, top_e[j])
            out = out + top_w[j].astype(x.dtype) * run(x, p, clusters, expert=top_e[j])
            count = count + jnp.sum(clusters)
        return out[None, None], count

    return hook


@functools.partial(jax.jit, static_argnames=("cfg", "plan", "impl"), donate_argnames=("cache",))
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
    impl: Impl = "auto",
):
    """Like :func:`pi2lab.engine.decode.decode_step` with a sparse FFN.

    ``params`` must hold the FFN in the sparse layout of ``plan`` (:meth:`SparseDecoder.layout`).
    ``predictors`` is a list of per-layer predictor dicts (``fc1, b1, fc2, b2``, or
    ``clusters``: a replayed ``[NC]`` cold-cluster mask for this token), or None for the
    oracle; ``threshold`` (a traced logit threshold) marks a neuron active when its score
    exceeds it.

    Returns the next token, logits ``[V]``, the cache and active cold clusters per layer ``[L]``.
    """
    traced("sparse_decode_step")
    plan.check_layout(params)
    hook = sparse_ffn_hook(cfg, plan, predictors, threshold, impl)
    logits, cache, counts = forward(params, cfg, token.reshape(1, 1), pos, cache, ffn=hook)
    logits = logits[0, 0]
    return sample(logits, jax.random.fold_in(key, pos), knobs), logits, cache, jnp.stack(counts)


@dataclasses.dataclass(frozen=True, eq=False)
class SparseDecoder:
    """What sparse decode needs beside the model: its plan, predictors and threshold.

    The model's FFN weights must be in the plan's sparse layout (:meth:`layout`, done once at
    load by :func:`pi2lab.predict.sparsify.load_sparse`); dense prefill and dense decode read
    that layout too, so no second copy of the FFN is kept.

    Attributes:
      plan: Static hot/cluster layout per layer.
      predictors: Per-layer predictor parameters, or None for the oracle.
      threshold: Logit threshold of the trained predictors (0 = probability 0.5); traced.
      impl: Sparse FFN formulation (:func:`pi2lab.kernels.sparse_ffn.sparse_ffn`); static.
    """

    plan: SparsePlan
    predictors: list | None = None
    threshold: float = 0.0
    impl: Impl = "auto"

    @classmethod
    def oracle(cls, cfg: ModelConfig, plan: SparsePlan | None = None) -> SparseDecoder:
        return cls(plan=plan or SparsePlan.uniform(cfg))

    def layout(self, params: dict) -> dict:
        """See :func:`pi2lab.kernels.sparse_ffn.sparse_layout`."""
        return sparse_layout(params, self.plan)

    def memory(self, params: dict) -> dict:
        """Bytes sparse decode holds: hot blocks, cold clusters, the rest of the model and
        the predictors, and whether a whole-matrix copy of the FFN is also held."""
        out = {"hot_bytes": 0, "cold_bytes": 0, "other_bytes": 0, "dense_ffn_bytes": 0}
        for p in params["layers"]:
            for k, v in p.items():
                group = k.split("_")[0] if k.startswith(("hot_", "cold_")) else "other"
                out[f"{'dense_ffn' if k in FFN_KEYS else group}_bytes"] += v.nbytes
        out["other_bytes"] += sum(v.nbytes for k, v in params.items() if k != "layers")
        out["predictor_bytes"] = sum(a.nbytes for a in jax.tree.leaves(self.predictors))
        out["total_bytes"] = sum(out.values())
        return out

    def __repr__(self) -> str:
        lp = self.plan.layers
        return (
            f"SparseDecoder({len(lp)} layers, hot {[p.hot for p in lp]}, clusters of "
            f"{sorted({p.cluster_size for p in lp})}, "
            f"{'oracle' if self.predictors is None else 'trained predictors'}, "
            f"threshold={self.threshold}, impl={self.impl!r})"
        )

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
            self.impl,
        )
        return token, logits, cache
