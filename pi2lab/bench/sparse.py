"""``pi2lab bench sparse``: sparse against dense decode, measured side by side in one run.

(a) the bundled model with its trained predictors, its cold neurons in frequency order and
regrouped by co-activation (fitted on training text, measured on held-out text); (b) a
synthetic dReLU model with 7B layer shapes (hidden 4096, FFN 14336, random weights) whose
cold-cluster masks are replayed from a synthetic activation model: neurons firing in
co-activated groups (:class:`pi2lab.predict.synthetic.CoactivationModel`) or independently
with Zipf frequencies (the worst case for clusters). For (b) the masks are given, so the
decode step runs no predictor; a rank-``r`` predictor is timed on its own and reported beside
it. Dense decode reads the same sparse-layout weights (one copy in memory).

Each figure pairs a measured speed-up with the bytes-touched bound: dense weight bytes per
token over the weight bytes sparse decode computes from (attention, hot block, gate/up/down
rows of the cold clusters it computes, predictors, LM head), the speed-up if time were
proportional to bytes read. The native kernel also skips the down row of neurons whose
activation is zero, so it can beat that bound.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.bench.common import decode_rate, dense_step, machine
from pi2lab.bench.grid import Knob, choice, count, expand, labels, share
from pi2lab.config import ModelConfig
from pi2lab.engine.sampling import SamplingKnobs
from pi2lab.engine.sparse import sparse_decode_step
from pi2lab.errors import ConfigError
from pi2lab.ffi import kernel_status
from pi2lab.kernels.predictor import scores
from pi2lab.kernels.sparse_ffn import sparse_ffn, sparse_layout
from pi2lab.kernels.sparse_plan import ClusterPlan, SparsePlan
from pi2lab.model.kv_cache import KVCache
from pi2lab.model.layers import ffn_activation, rms_norm
from pi2lab.model.params import init_params, merge_ffn, split_ffn
from pi2lab.model.pretrained import data_dir
from pi2lab.model.transformer import forward
from pi2lab.predict.fidelity import fidelity, sparse_logits
from pi2lab.predict.placement import (
    cluster_stats,
    coactivation_order,
    coactivation_orders,
    permute_predictors,
)
from pi2lab.predict.profile import ActivationTrace, profile
from pi2lab.predict.reorder import permute_params
from pi2lab.predict.sparsify import load_sparse
from pi2lab.predict.synthetic import CoactivationModel, independent_masks, zipf_frequency
from pi2lab.train.corpus import corpus_tokens

CLUSTER_SIZES = (1, 4, 16, 64, 128)
KNOBS = (  # of the synthetic 7B-shaped model (bench_synthetic's arguments)
    Knob(
        name="cluster_size",
        read=count(),
        default=(16,),
        help="neurons per cold cluster (computed, or skipped, together)",
    ),
    Knob(name="density", read=share(), default=(0.1,), help="share of neurons firing per token"),
    Knob(
        name="masks",
        read=choice("coactivated", "fitted", "independent"),
        default=("coactivated",),
        help="how neurons fire: in co-activated groups, as fitted to the bundled model's trace, "
        "or independently (Zipf)",
    ),
    Knob(
        name="placement",
        read=choice("coactivation", "frequency"),
        default=("coactivation",),
        help="order of the cold neurons, hence which share a cluster",
    ),
)


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


@functools.cache
def fitted_activation_model(layer: int = 3) -> CoactivationModel:
    """The co-activation structure fitted to the bundled model's recorded trace (one layer's
    cold neurons, 16-neuron clusters), for 7B-shaped masks."""
    trace = ActivationTrace.load(data_dir() / "traces" / "pydoc-drelu.npz")
    masks = trace.active(layer)
    masks = masks[:, np.argsort(-masks.mean(0), kind="stable")]
    return CoactivationModel.fit(masks[:, masks.shape[1] % 16 :])[0]


def synthetic_masks(kind: str, neurons: int, density: float, tokens: int, seed: int = 0):
    """``[T, F]`` hot-first neuron masks: ``coactivated`` (latent groups of 64 neurons,
    coherence 0.7, 10% independent firing), ``fitted`` (the structure fitted to the bundled
    model's trace, :func:`fitted_activation_model`) or ``independent`` (Zipf, skew 1)."""
    rng = np.random.default_rng(seed)
    if kind == "coactivated":
        model = CoactivationModel(neurons=neurons, density=density, group_size=64, seed=seed)
        return model.sample(rng, tokens)
    if kind == "fitted":
        model = dataclasses.replace(
            fitted_activation_model(), neurons=neurons, density=density, seed=seed
        )
        return model.sample(rng, tokens)
    if kind == "independent":
        return independent_masks(rng, zipf_frequency(neurons, density=density), tokens)
    raise ConfigError(f"masks={kind!r}: expected 'coactivated', 'fitted' or 'independent'")


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
    and whatever the whole step costs beyond the sum of its parts). ``params`` in the plan's
    sparse layout."""
    x = jnp.ones(cfg.hidden_size, params["embed"].dtype) * 0.1
    layers = params["layers"]
    kind, thr = cfg.ffn_activation, cfg.activation_threshold

    @jax.jit
    def ffn_all(layers, clusters):
        return sum(
            sparse_ffn(x, p, c, lp, kind, thr)
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


def formulations(p: dict, cfg: ModelConfig, lp: ClusterPlan, clusters: np.ndarray) -> dict:
    """One layer's FFN for one token (``p`` in the sparse layout, ``clusters [NC]`` active),
    milliseconds, each way measured: dense (every neuron, the same arrays); the native FFI
    kernel (kept: the fastest); a loop over the active clusters reading each in place (the
    pure-JAX path); a fixed-capacity batched gather of whole clusters (``W[idx]`` copies them,
    then one batched product); and masked dense (the overflow path)."""
    kind, thr = cfg.ffn_activation, cfg.activation_threshold
    x = jnp.ones(cfg.hidden_size, p["hot_gate"].dtype) * 0.1
    idx = jnp.asarray(np.flatnonzero(clusters), jnp.int32)

    @jax.jit
    def dense(p):
        out = 0.0
        for g, u, d in ((p[f"{b}_gate"], p[f"{b}_up"], p[f"{b}_down"]) for b in ("hot", "cold")):
            g, u, d = (w.reshape(-1, w.shape[-1]) for w in (g, u, d))
            h = ffn_activation(jnp.einsum("fd,d->f", g, x), jnp.einsum("fd,d->f", u, x), kind, thr)
            out = out + jnp.einsum("f,fd->d", h, d)
        return out

    @jax.jit
    def gather(p, idx):
        g, u, d = (p[f"cold_{k}"][idx] for k in ("gate", "up", "down"))  # [K, C, D] copies
        h = ffn_activation(jnp.einsum("kcd,d->kc", g, x), jnp.einsum("kcd,d->kc", u, x), kind, thr)
        hot = sparse_ffn(x, p, jnp.zeros_like(clusters), lp, kind, thr, impl="loop")
        return hot + jnp.einsum("kc,kcd->d", h, d)

    def kernel(impl, plan=lp):
        return jax.jit(lambda p, c: sparse_ffn(x, p, c, plan, kind, thr, impl=impl))

    out = {"dense_ms": _ms(_time(dense, p))}
    if kernel_status()["path"] == "native":
        out["native_ms"] = _ms(_time(kernel("native"), p, clusters))
    out["cluster_loop_ms"] = _ms(_time(kernel("loop"), p, clusters))
    out["batched_gather_ms"] = _ms(_time(gather, p, idx))
    overflow = ClusterPlan(hot=lp.hot, cluster_size=lp.cluster_size, capacity=0)
    out["masked_dense_ms"] = _ms(_time(kernel("loop", overflow), p, clusters))
    out["neurons_computed"] = int(lp.hot + clusters.sum() * lp.cluster_size)
    out["neurons"] = cfg.intermediate_size
    return out


def cluster_sweep(
    layer: dict, cfg: ModelConfig, fit: np.ndarray, held_out: np.ndarray, hot: int, sizes
) -> list[dict]:
    """For each cluster size: cold clusters active per token on held-out masks in frequency
    order and in co-activation order (fitted on ``fit``), the share of computed cold neurons
    that fire, and one layer's FFN time with the co-activation order (native where built,
    and the pure-JAX loop). ``layer``: one layer's whole ``gate/up/down [F, D]``."""
    kind, thr = cfg.ffn_activation, cfg.activation_threshold
    f = cfg.intermediate_size
    x = jnp.ones(cfg.hidden_size, layer["gate"].dtype) * 0.1
    rows = []
    for c in sizes:
        h = f - ((f - hot) // c) * c
        perm = coactivation_order(fit, h, c)
        freq_stats = cluster_stats(held_out, h, c)
        co_stats = cluster_stats(held_out[:, perm], h, c)
        lp = ClusterPlan(hot=h, cluster_size=c, capacity=(f - h) // c)
        p = split_ffn(
            {"layers": [permute_params({"layers": [layer]}, perm[None])["layers"][0]]}, [h], [c]
        )
        p = p["layers"][0]
        active = held_out[:, perm][0, h:].reshape(-1, c).any(-1)
        row = {
            "cluster_size": c,
            "hot": h,
            "clusters": (f - h) // c,
            "frequency_order": {k: round(v, 4) for k, v in freq_stats.items()},
            "coactivation_order": {k: round(v, 4) for k, v in co_stats.items()},
        }
        for impl in ("native", "loop"):
            if impl == "native" and kernel_status()["path"] != "native":
                continue
            fn = jax.jit(
                lambda p, a, impl=impl, lp=lp: sparse_ffn(x, p, a, lp, kind, thr, impl=impl)
            )
            row[f"ffn_{impl}_ms"] = _ms(_time(fn, p, active, n=10))
        rows.append(row)
        del p
    return rows


def _compare(params, cfg, plan, predictors_at, counts, sample, steps, repeats, pred_params) -> dict:
    """Dense and sparse decode interleaved on the same sparse-layout ``params``; sparse with
    the native kernel (where built) and with the pure-JAX loop. ``predictors_at(i)`` gives
    step i's predictors, ``counts [T, L]`` the active cold clusters per step and layer,
    ``sample`` one step's per-layer cluster masks (for the breakdown)."""
    key, knobs, thr = jax.random.key(0), SamplingKnobs.make(), jnp.float32(0.0)

    def sparse(impl):
        def step(i, cache, token, pos):
            token, _, cache, _ = sparse_decode_step(
                params, predictors_at(i), thr, cfg, plan, cache, token, pos, key, knobs, impl
            )
            return token, cache

        return lambda: decode_rate(step, params, cfg, steps)

    runs = {"dense": lambda: decode_rate(dense_step(params, cfg), params, cfg, steps)}
    if kernel_status()["path"] == "native":
        runs["sparse"] = sparse("native")
    runs["sparse_jax_loop"] = sparse("loop")
    rates = _interleaved(runs, repeats)
    med = {k: float(np.median(v)) for k, v in rates.items()}
    med.setdefault("sparse", med["sparse_jax_loop"])
    itemsize = params["embed"].dtype.itemsize
    mean_clusters = counts.mean(0)  # [L]
    n_clusters = np.array([lp.num_clusters(cfg.intermediate_size) for lp in plan.layers])
    dense_b = _bytes(cfg, itemsize)
    sparse_b = _bytes(cfg, itemsize, plan, mean_clusters, pred_params)
    speedup = med["sparse"] / med["dense"]
    bound = dense_b / sparse_b
    return {
        "kernel": kernel_status()["path"],
        "dense_tokens_per_s": round(med["dense"], 2),
        "sparse_tokens_per_s": round(med["sparse"], 2),
        "sparse_jax_loop_tokens_per_s": round(med["sparse_jax_loop"], 2),
        "runs": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        "speedup": round(speedup, 3),
        "jax_loop_speedup": round(med["sparse_jax_loop"] / med["dense"], 3),
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


def bench_bundled(
    steps: int, repeats: int, threshold: float = 0.0, fit_tokens: int = 4096, seqs: int = 4
) -> dict:
    """(a): the bundled model with its trained predictors, teacher-forced on held-out text for
    the clusters and fidelity, greedy decode for the speed, three ways: the shipped plan
    (16-neuron clusters, frequency order); the same clusters with cold neurons regrouped by
    co-activation fitted on ``fit_tokens`` training tokens (predictors permuted alike, not
    retrained); and one-neuron clusters (every predicted neuron, no other)."""
    model, sparse = load_sparse("builtin", threshold=threshold)
    cfg = model.config
    trace = profile(model, corpus_tokens(model, "train", fit_tokens))
    co = coactivation_orders([trace.active(i) for i in range(cfg.num_layers)], sparse.plan)
    placed = dataclasses.replace(
        model, params=sparse.layout(permute_params(merge_ffn(model.params), co))
    )
    placed_sparse = dataclasses.replace(
        sparse, predictors=permute_predictors(sparse.predictors, co)
    )
    neuron_plan = sparse.plan.with_cluster_size(1, cfg.intermediate_size)
    single = dataclasses.replace(model, params=sparse_layout(model.params, neuron_plan))
    held_out = corpus_tokens(model, "held_out", max(steps + 1, seqs * 128))
    sequences = [held_out[i * 128 : (i + 1) * 128] for i in range(seqs)]
    true_masks = profile(model, held_out)  # what actually fires on the held-out tokens
    pred_params = sum(a.size for a in jax.tree.leaves(sparse.predictors))
    out = {"model": model.path.name, "threshold": threshold, "placement_fit_tokens": fit_tokens}
    rows = (
        ("frequency", model, sparse),
        ("coactivation", placed, placed_sparse),
        ("single_neurons", single, dataclasses.replace(sparse, plan=neuron_plan)),
    )
    for name, m, dec in rows:
        # clusters the predictors choose on held-out text, for the bytes bound and breakdown
        _, counts = sparse_logits(m, dec, held_out[: steps + 1])
        sample = [
            np.arange(lp.num_clusters(cfg.intermediate_size)) < c
            for lp, c in zip(dec.plan.layers, counts[0], strict=True)
        ]
        row = _compare(
            m.params,
            cfg,
            dec.plan,
            lambda i, dec=dec: dec.predictors,
            counts,
            sample,
            steps,
            repeats,
            pred_params,
        )
        fid = fidelity(m, dec, sequences, [threshold])[0]
        identity = np.tile(np.arange(cfg.intermediate_size), (cfg.num_layers, 1))
        order = co if name == "coactivation" else identity
        per_layer = [  # the same clusters on what actually fires (no predictor)
            cluster_stats(true_masks.active(i)[:, order[i]], lp.hot, lp.cluster_size)
            for i, lp in enumerate(dec.plan.layers)
        ]
        row["true_masks"] = {
            k: round(float(np.mean([r[k] for r in per_layer])), 4) for k in per_layer[0]
        }
        row["perplexity_increase"] = round(fid["perplexity_increase"], 5)
        row["greedy_agreement"] = round(fid["greedy_agreement"], 4)
        out[name] = row
    out["memory"] = sparse.memory(model.params)
    return out


def bench_synthetic(
    steps: int,
    repeats: int,
    *,
    layers: int = 4,
    hidden: int = 4096,
    ffn: int = 14336,
    density: float = 0.1,
    masks: str = "coactivated",
    cluster_size: int = 64,
    placement: str = "coactivation",
    fit_tokens: int = 1024,
    predictor_rank: int = 512,
    sweep: tuple[int, ...] = (),
    seed: int = 0,
) -> dict:
    """(b): 7B layer shapes; masks from ``masks`` activations, the hot block and cold
    placement fitted on ``fit_tokens`` tokens and decode replaying later ones (every layer
    the same activation model, each layer its own tokens)."""
    cfg = synthetic_config(layers, hidden, ffn)
    neurons = synthetic_masks(masks, ffn, density, fit_tokens + steps * layers, seed)
    fit, held_out = neurons[:fit_tokens], neurons[fit_tokens:]
    plan = SparsePlan.from_frequency(
        np.broadcast_to(fit.mean(0), (layers, ffn)), cluster_size=cluster_size
    )
    lp = plan.layers[0]
    perm = coactivation_order(fit, lp.hot, lp.cluster_size)
    if placement == "frequency":
        perm = np.arange(ffn)
    dense = init_params(cfg, jax.random.key(seed))
    sweep_rows = (
        cluster_sweep(dense["layers"][0], cfg, fit, held_out, lp.hot, sweep) if sweep else []
    )
    params = sparse_layout(permute_params(dense, np.broadcast_to(perm, (layers, ffn))), plan)
    del dense
    clusters = np.stack(
        [
            held_out[i * steps : (i + 1) * steps][:, perm][:, lp.hot :]
            .reshape(steps, -1, lp.cluster_size)
            .any(-1)
            for i in range(layers)
        ],
        1,
    )  # [T, L, NC]
    replay = [[{"clusters": clusters[t, i]} for i in range(layers)] for t in range(steps)]
    out = _compare(
        params,
        cfg,
        plan,
        lambda t: replay[t % steps],
        clusters.sum(-1),
        list(clusters[0]),
        steps,
        repeats,
        0,
    )
    out["formulations"] = formulations(params["layers"][0], cfg, lp, clusters[0, 0])
    out["cluster_sweep"] = sweep_rows
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
        "masks": masks,
        "placement": placement,
        "density": density,
        "neuron_density_sampled": round(float(held_out.mean()), 4),
        **out,
        "predictor_rank": predictor_rank,
        "predictor_ms_separate": round(pred_s * 1e3, 3),
        "sparse_tokens_per_s_with_predictor_estimate": round(with_pred, 2),
    }


def bench_sparse(
    *,
    quick: bool = False,
    steps: int | None = None,
    layers: int | None = None,
    grid: dict | None = None,
) -> dict:
    """Every row of ``pi2lab bench sparse`` (``quick``: fewer steps and layers, no sweep);
    with ``grid`` (:data:`KNOBS` -> values) the synthetic 7B-shaped model once per
    combination instead, each a section named after its knob values."""
    steps = steps or (8 if quick else 48)
    repeats = 2 if quick else 5
    syn_steps, syn_layers = max(steps // 2, 4), layers or (1 if quick else 4)
    out = {"bench": "sparse", "machine": machine(), "kernel": kernel_status()}
    if grid is not None:
        out["grid"] = {k: list(v) for k, v in grid.items()}
        points = expand(grid, KNOBS)
        for point, name in zip(points, labels(points, grid), strict=True):
            row = bench_synthetic(syn_steps, repeats, layers=syn_layers, **point)
            out[name] = {"knobs": point, **_summarise(row)}
        return out
    runs = {  # name -> bench_synthetic settings
        "synthetic_7b": dict(cluster_size=1, sweep=() if quick else CLUSTER_SIZES),
        "synthetic_7b_c16_coactivation": dict(cluster_size=16),
        "synthetic_7b_c16_frequency": dict(cluster_size=16, placement="frequency"),
        "synthetic_7b_c16_independent": dict(cluster_size=16, masks="independent"),
        "synthetic_7b_c16_fitted": dict(cluster_size=16, masks="fitted"),
    }
    for name, kw in runs.items():
        out[name] = _summarise(bench_synthetic(syn_steps, repeats, layers=syn_layers, **kw))
    bundled = bench_bundled(steps, repeats)
    for name in ("frequency", "coactivation", "single_neurons"):
        out[f"bundled_{name}"] = _summarise(bundled.pop(name))
    out["bundled"] = bundled
    return out


def _summarise(row: dict) -> dict:
    row["summary"] = (
        f"dense {row['dense_tokens_per_s']:.2f} tok/s, sparse "
        f"{row['sparse_tokens_per_s']:.2f} tok/s ({row['kernel']}; JAX loop "
        f"{row['sparse_jax_loop_tokens_per_s']:.2f}), speed-up {row['speedup']:.2f}x, "
        f"bytes bound {row['bytes_bound_speedup']:.2f}x "
        f"({row['fraction_of_bound']:.0%} of bound), cold clusters computed "
        f"{row['cold_clusters_computed']:.1%}; breakdown ms "
        f"{ {k[:-3]: v for k, v in row['breakdown'].items()} }"
    )
    if "perplexity_increase" in row:
        row["summary"] += (
            f"; held-out perplexity {row['perplexity_increase']:+.2%}, greedy agreement "
            f"{row['greedy_agreement']:.1%}"
        )
    return row
