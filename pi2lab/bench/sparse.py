"""``pi2lab bench sparse``: sparse against dense decode, measured side by side in one run.

(a) the bundled model with its trained predictors; (b) a synthetic dReLU model with 7B layer
shapes (hidden 4096, FFN 14336, random weights) whose cold-cluster masks are replayed from a
Zipf-like per-neuron firing profile (neurons fire independently with their frequency). For
(b) the masks are given, so the decode step runs no predictor; a rank-``r`` predictor is timed
on its own and reported beside it.

Each figure pairs a measured speed-up with the bytes-touched bound: dense weight bytes per
token over the weight bytes sparse decode reads (attention, hot block, the cold clusters it
computes, predictors, LM head), the speed-up if time were proportional to bytes read.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.bench import decode_rate, dense_step, machine
from pi2lab.config import ModelConfig
from pi2lab.engine.sampling import SamplingKnobs
from pi2lab.engine.sparse import SparsePlan, sparse_decode_step
from pi2lab.engine.state import KVCache
from pi2lab.kernels.sparse_ffn import sparse_ffn
from pi2lab.model.layers import ffn_activation, rms_norm
from pi2lab.model.params import init_params
from pi2lab.model.transformer import forward
from pi2lab.predict.predictor import scores


def synthetic_config(layers: int, hidden: int = 4096, ffn: int = 14336, **overrides) -> ModelConfig:
    """A dReLU model with 7B layer shapes (128-wide heads, 4 query heads per KV head) and a
    small vocabulary, for benchmarks."""
    return ModelConfig(
        **{
            **dict(
                architecture="bamboo",
                ffn_activation="drelu",
                vocab_size=4096,
                hidden_size=hidden,
                intermediate_size=ffn,
                num_layers=layers,
                num_heads=hidden // 128,
                num_kv_heads=max(hidden // 512, 1),
                head_dim=128,
                max_position_embeddings=1024,
            ),
            **overrides,
        }
    )


def zipf_frequency(neurons: int, *, density: float = 0.1, skew: float = 1.0) -> np.ndarray:
    """Per-neuron firing probabilities ``[F]``, descending, ``min(1, c / (i+1)^skew)`` with c
    chosen so the mean is ``density``."""
    raw = 1.0 / np.arange(1, neurons + 1) ** skew
    lo, hi = 0.0, neurons / raw.sum() * 1e3
    for _ in range(100):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if np.minimum(1.0, c * raw).mean() < density else (lo, c)
    return np.minimum(1.0, c * raw)


def sample_cluster_masks(rng, frequency: np.ndarray, plan, steps: int) -> np.ndarray:
    """Cold-cluster masks ``[steps, NC]`` from independent per-neuron firing."""
    fired = rng.random((steps, frequency.size)) < frequency
    return fired[:, plan.hot :].reshape(steps, -1, plan.cluster_size).any(-1)


def _bytes(
    cfg: ModelConfig,
    itemsize: int,
    plan: SparsePlan | None = None,
    clusters: np.ndarray | None = None,
    predictor_params: int = 0,
) -> float:
    """Weight bytes one decode step reads; sparse when ``plan`` and mean active clusters per
    layer ``clusters [L]`` are given."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    attn = d * cfg.head_dim * (2 * cfg.num_heads + 2 * cfg.num_kv_heads)
    head = cfg.vocab_size * d
    if plan is None:
        ffn = cfg.num_layers * 3 * f * d
    else:
        ffn = sum(
            3 * d * (lp.hot + c * lp.cluster_size)
            for lp, c in zip(plan.layers, clusters, strict=True)
        )
    return float(itemsize * (cfg.num_layers * attn + ffn + head + predictor_params))


def _interleaved(runs: dict, repeats: int) -> dict[str, list[float]]:
    """Calls each ``runs[name]()`` once to warm up, then ``repeats`` times in turn."""
    for fn in runs.values():
        fn()
    out = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            out[name].append(fn())
    return out


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 3)


def _time(fn, *args, n: int = 20) -> float:
    """Median seconds of a jitted call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def breakdown(
    params, cfg: ModelConfig, plan: SparsePlan, masks: list[np.ndarray], predictors, step_s: float
) -> dict:
    """Per-token milliseconds by part, from parts jitted and timed on their own: predictor,
    attention (the step with a zero FFN, less embedding/head), hot FFN, cold FFN (the
    clusters of ``masks``, one ``[NC]`` per layer), and other (embedding, LM head, sampling,
    and whatever the whole step costs beyond the sum of its parts)."""
    x = jnp.ones(cfg.hidden_size, params["embed"].dtype) * 0.1
    layers = params["layers"]
    kind, thr = cfg.ffn_activation, cfg.activation_threshold

    @jax.jit
    def ffn_all(layers, clusters):
        return sum(
            sparse_ffn(x, p["gate"], p["up"], p["down"], c, lp, kind, thr)
            for p, c, lp in zip(layers, clusters, plan.layers, strict=True)
        )

    none = [np.zeros_like(m) for m in masks]
    hot_s = _time(ffn_all, layers, none)
    cold_s = max(_time(ffn_all, layers, list(masks)) - hot_s, 0.0)
    pred_s = 0.0
    if predictors is not None:
        pred_s = _time(jax.jit(lambda ps: [scores(p, x) for p in ps]), predictors)

    def zero_ffn(i, resid, h, p):
        return jnp.zeros_like(h), jnp.int32(0)

    @jax.jit
    def no_ffn_step(params, cache, token):
        logits, cache, _ = forward(params, cfg, token.reshape(1, 1), 20, cache, ffn=zero_ffn)
        return jnp.argmax(logits[0, 0]), cache

    @jax.jit
    def head(params):
        h = rms_norm(x, params["final_norm"], cfg.rms_norm_eps)
        w = params["embed"] if cfg.tie_word_embeddings else params["lm_head"]
        return jnp.argmax(w @ h) + params["embed"][3].sum().astype(jnp.int32)

    cache = KVCache.zeros(cfg, 128, dtype=params["embed"].dtype)
    no_ffn_s = _time(no_ffn_step, params, cache, jnp.int32(3))
    head_s = _time(head, params)
    attention_s = max(no_ffn_s - head_s, 0.0)
    other_s = max(step_s - attention_s - hot_s - cold_s - pred_s, 0.0)
    return {
        "predictor_ms": _ms(pred_s),
        "attention_ms": _ms(attention_s),
        "hot_ffn_ms": _ms(hot_s),
        "cold_ffn_ms": _ms(cold_s),
        "other_ms": _ms(other_s),
        "step_ms": _ms(step_s),
    }


def formulations(params, cfg: ModelConfig, plan: SparsePlan, masks: np.ndarray) -> dict:
    """One layer's FFN for one token four ways, milliseconds: dense; the active neurons
    gathered as rows (``W[idx]`` materialises a copy); the cluster loop reading in place (the
    kernel); and masked dense (the kernel's overflow path). Same clusters for all but dense."""
    p, lp = params["layers"][0], plan.layers[0]
    kind, thr = cfg.ffn_activation, cfg.activation_threshold
    x = jnp.ones(cfg.hidden_size, params["embed"].dtype) * 0.1
    clusters = masks[0]
    neurons = np.concatenate(
        [
            np.arange(lp.hot),
            lp.hot
            + (
                np.flatnonzero(clusters)[:, None] * lp.cluster_size + np.arange(lp.cluster_size)
            ).reshape(-1),
        ]
    ).astype(np.int32)

    @jax.jit
    def dense(p):
        return ffn_activation(p["gate"] @ x, p["up"] @ x, kind, thr) @ p["down"]

    @jax.jit
    def gather(p, idx):
        h = ffn_activation(p["gate"][idx] @ x, p["up"][idx] @ x, kind, thr)
        return h @ p["down"][idx]

    overflow = dataclasses.replace(lp, capacity=0)
    kernel = jax.jit(lambda p, c: sparse_ffn(x, p["gate"], p["up"], p["down"], c, lp, kind, thr))
    masked = jax.jit(
        lambda p, c: sparse_ffn(x, p["gate"], p["up"], p["down"], c, overflow, kind, thr)
    )
    return {
        "dense_ms": _ms(_time(dense, p)),
        "row_gather_ms": _ms(_time(gather, p, neurons)),
        "cluster_loop_ms": _ms(_time(kernel, p, clusters)),
        "masked_dense_ms": _ms(_time(masked, p, clusters)),
        "neurons_computed": int(neurons.size),
        "neurons": cfg.intermediate_size,
    }


def _compare(params, cfg, plan, predictors_at, counts, sample, steps, repeats, pred_params) -> dict:
    """Dense and sparse decode interleaved; ``predictors_at(i)`` gives step i's predictors,
    ``counts [T, L]`` the active cold clusters per step and layer, ``sample`` one step's
    per-layer cluster masks (for the breakdown)."""
    key, knobs, thr = jax.random.key(0), SamplingKnobs.make(), jnp.float32(0.0)

    def sparse(i, cache, token, pos):
        token, _, cache, _ = sparse_decode_step(
            params, predictors_at(i), thr, cfg, plan, cache, token, pos, key, knobs
        )
        return token, cache

    rates = _interleaved(
        {
            "dense": lambda: decode_rate(dense_step(params, cfg), params, cfg, steps),
            "sparse": lambda: decode_rate(sparse, params, cfg, steps),
        },
        repeats,
    )
    med = {k: float(np.median(v)) for k, v in rates.items()}
    itemsize = params["embed"].dtype.itemsize
    mean_clusters = counts.mean(0)  # [L]
    n_clusters = np.array([lp.num_clusters(cfg.intermediate_size) for lp in plan.layers])
    dense_b = _bytes(cfg, itemsize)
    sparse_b = _bytes(cfg, itemsize, plan, mean_clusters, pred_params)
    speedup = med["sparse"] / med["dense"]
    bound = dense_b / sparse_b
    return {
        "dense_tokens_per_s": round(med["dense"], 2),
        "sparse_tokens_per_s": round(med["sparse"], 2),
        "runs": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        "speedup": round(speedup, 3),
        "bytes_bound_speedup": round(bound, 3),
        "fraction_of_bound": round(speedup / bound, 3),
        "dense_mb_per_token": round(dense_b / 1e6, 2),
        "sparse_mb_per_token": round(sparse_b / 1e6, 2),
        "cold_clusters_computed": round(float(np.mean(counts / np.maximum(n_clusters, 1))), 4),
        "hot_neurons_per_layer": [lp.hot for lp in plan.layers],
        "cluster_size": plan.layers[0].cluster_size,
        "breakdown": breakdown(
            params,
            cfg,
            plan,
            sample,
            predictors_at(0) if pred_params else None,
            1.0 / med["sparse"],
        ),
    }


def bench_bundled(steps: int, repeats: int, threshold: float = 0.0) -> dict:
    """(a): the bundled model with its trained predictors, greedy decode from a real prompt."""
    from pi2lab.predict.fidelity import sparse_logits
    from pi2lab.predict.sparsify import load_sparse
    from pi2lab.train.corpus import corpus_tokens

    model, sparse = load_sparse("builtin", threshold=threshold)
    cfg = model.config
    # clusters the predictors choose on real text, for the bytes bound and the breakdown
    _, counts = sparse_logits(model, sparse, corpus_tokens(model, "held_out", steps + 1))
    sample = [
        np.arange(lp.num_clusters(cfg.intermediate_size)) < c
        for lp, c in zip(sparse.plan.layers, counts[0], strict=True)
    ]
    pred_params = sum(a.size for a in jax.tree.leaves(sparse.predictors))
    out = _compare(
        model.params,
        cfg,
        sparse.plan,
        lambda i: sparse.predictors,
        counts,
        sample,
        steps,
        repeats,
        pred_params,
    )
    return {"model": model.path.name, "threshold": threshold, **out}


def bench_synthetic(
    steps: int,
    repeats: int,
    *,
    layers: int = 4,
    hidden: int = 4096,
    ffn: int = 14336,
    density: float = 0.1,
    skew: float = 1.0,
    cluster_size: int = 8,
    predictor_rank: int = 512,
    seed: int = 0,
) -> dict:
    """(b): 7B layer shapes, masks replayed from a Zipf-like profile."""
    cfg = synthetic_config(layers, hidden, ffn)
    params = init_params(cfg, jax.random.key(seed))
    freq = zipf_frequency(ffn, density=density, skew=skew)
    plan = SparsePlan.from_frequency(
        np.broadcast_to(freq, (layers, ffn)), cluster_size=cluster_size
    )
    rng = np.random.default_rng(seed)
    masks = np.stack([sample_cluster_masks(rng, freq, lp, steps) for lp in plan.layers], 1)
    replay = [[{"clusters": masks[i, layer]} for layer in range(layers)] for i in range(steps)]
    out = _compare(
        params,
        cfg,
        plan,
        lambda i: replay[i % steps],
        masks.sum(-1),
        list(masks[0]),
        steps,
        repeats,
        0,
    )
    out["formulations"] = formulations(params, cfg, plan, masks[0])
    k = jax.random.key(seed + 1)
    pred = [
        {
            "fc1": jax.random.normal(k, (predictor_rank, hidden)) * 0.01,
            "b1": jnp.zeros(predictor_rank),
            "fc2": jax.random.normal(k, (ffn, predictor_rank)) * 0.01,
            "b2": jnp.zeros(ffn),
        }
        for _ in range(layers)
    ]
    x = jnp.ones(hidden)
    pred_s = _time(jax.jit(lambda ps: [scores(p, x) for p in ps]), pred)
    with_pred = 1.0 / (1.0 / out["sparse_tokens_per_s"] + pred_s)
    return {
        "layers": layers,
        "hidden": hidden,
        "ffn": ffn,
        "density": density,
        "skew": skew,
        "neuron_density_sampled": round(float(freq.mean()), 4),
        **out,
        "predictor_rank": predictor_rank,
        "predictor_ms_separate": round(pred_s * 1e3, 3),
        "sparse_tokens_per_s_with_predictor_estimate": round(with_pred, 2),
    }


def bench_sparse(
    *, quick: bool = False, steps: int | None = None, layers: int | None = None
) -> dict:
    steps = steps or (8 if quick else 48)
    repeats = 2 if quick else 5
    syn = bench_synthetic(max(steps // 2, 4), repeats, layers=layers or (1 if quick else 4))
    bundled = bench_bundled(steps, repeats)
    return {
        "bench": "sparse",
        "machine": machine(),
        "bundled": _summarise(bundled),
        "synthetic_7b": _summarise(syn),
    }


def _summarise(row: dict) -> dict:
    row["summary"] = (
        f"dense {row['dense_tokens_per_s']:.2f} tok/s, sparse "
        f"{row['sparse_tokens_per_s']:.2f} tok/s, speed-up {row['speedup']:.2f}x, "
        f"bytes bound {row['bytes_bound_speedup']:.2f}x "
        f"({row['fraction_of_bound']:.0%} of bound); breakdown ms "
        f"{ {k[:-3]: v for k, v in row['breakdown'].items()} }"
    )
    return row
