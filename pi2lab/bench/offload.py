"""``pi2lab bench offload``: the offload engines side by side, reads bypassing the page cache.

(a) the bundled model with its trained predictors, converted to a flash layout; (b) a
synthetic dReLU model with 7B layer shapes (hidden 4096, FFN 14336) whose FFN bundles (int4,
one neuron per 8 KiB unit; attention and embeddings int4 too) live in a real file, with neuron
masks replayed from the Zipf-like firing profile of ``pi2lab bench sparse`` (neurons fire
independently with their frequency, so a cache gains from the skew, not from token-to-token
reuse); (c) the same shapes with co-activated firing and units of 4 neurons placed in
co-activation order, so that neurons that fire together are read together; (d) powerinfer2 on
f32, int8 and int4 layouts of (b)'s weights, one after another; (e) a Mixtral-shaped synthetic
MoE (8 dReLU experts of 7B width per layer, top-2; a quarter of the width with ``--quick``)
with one bundle file per expert, routed by its real router and each expert's neuron masks
replayed (Zipf, 15% per expert as TurboSparse-Mixtral): powerinfer2, llmflash and dense-stream
at 50%, and powerinfer2 with the cache shared among experts by a routing profile.

Per model, in one run with the engines interleaved block by block: tokens/s of ``powerinfer2``,
``llmflash`` and ``dense-stream`` at an FFN budget of 50%, ``powerinfer2`` at 60% and with
everything resident (100%, the same compute path without reads), and the in-memory JAX sparse
decode on the same quantized weights; bytes and reads per token, hit rate and I/O share of the
critical path per engine; hit rate per cache policy replayed through the policy code on the
same masks (with the Belady bound); and the storage bandwidth curve of the file the bundles
are read from.

With a grid (:data:`KNOBS`: model, engine, budget, policy, overlap mode, I/O threads, depth,
cross-layer prefetch, precision, cluster size), one configuration per combination instead,
each a section named after its values (:func:`bench_grid`); :func:`measure_points` is what
runs them, for sweeps (:mod:`pi2lab.lab`) too.
"""

from __future__ import annotations

import dataclasses
import fcntl
import gc
import tempfile
import time
import typing
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import psutil

from pi2lab.bench.common import machine
from pi2lab.bench.grid import Knob, choice, count, expand, labels, policy_name, share
from pi2lab.bench.sparse import synthetic_config, synthetic_masks
from pi2lab.budget import MemoryBudget
from pi2lab.cache import simulate
from pi2lab.config import ModelConfig
from pi2lab.convert import convert, convert_pretrained
from pi2lab.engine.offload import ENGINE_POLICY, ENGINES, OffloadConfig, OffloadEngine
from pi2lab.engine.sampling import SamplingKnobs
from pi2lab.engine.sparse import sparse_decode_step
from pi2lab.errors import StorageError
from pi2lab.fileio import bench_dir
from pi2lab.kernels.sparse_ffn import sparse_layout
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.model.kv_cache import KVCache
from pi2lab.model.params import quantize_params
from pi2lab.model.pretrained import data_dir, load_config, load_pretrained, resolve
from pi2lab.pipeline.scheduler import OverlapMode, PipelineConfig
from pi2lab.policies import Belady, ExpertAware
from pi2lab.policies.registry import make_policy
from pi2lab.predict.placement import coactivation_order
from pi2lab.predict.profile import ActivationTrace
from pi2lab.predict.synthetic import zipf_frequency
from pi2lab.storage.io import measure_bandwidth
from pi2lab.storage.layout import (
    BITS,
    FFN_KEYS,
    HEADER,
    FlashLayout,
    StorageDtype,
    default_cluster_size,
    open_layout,
)

ENGINE_RUNS = {  # name -> settings
    "powerinfer2": OffloadConfig(engine="powerinfer2", memory_budget=0.5),
    "llmflash": OffloadConfig(engine="llmflash", memory_budget=0.5),
    "dense-stream": OffloadConfig(engine="dense-stream", memory_budget=0.5),
    "powerinfer2@60%": OffloadConfig(engine="powerinfer2", memory_budget=0.6),
    "powerinfer2, prefetch 1": OffloadConfig(pipeline=PipelineConfig(prefetch=1)),
    # every unit resident from the start: the same compute path, no reads
    "in-memory (offload path, 100%)": OffloadConfig(memory_budget=1.0, policy="static-hot"),
}
SYNTHETIC_EXTRA = {  # one neuron per unit: gate-first applies
    "powerinfer2, 2 I/O threads": OffloadConfig(pipeline=PipelineConfig(io_threads=2)),
    "powerinfer2, gate-first": OffloadConfig(pipeline=PipelineConfig(gate_first=True)),
}


def synthetic_model(layers: int, seed: int = 0, dtype: StorageDtype = "int4"):
    """``bench sparse``'s synthetic model with a tied LM head, as a flash layout with ``dtype``
    bundles written once under :func:`pi2lab.fileio.bench_dir` (shared with ``bench
    planner``), with its Zipf firing frequency ``[F]`` and sparse plan (one-neuron clusters)."""
    cfg = synthetic_config(layers, tie_word_embeddings=True)
    frequency = zipf_frequency(cfg.intermediate_size, density=0.1)
    plan = SparsePlan.from_frequency(
        np.broadcast_to(frequency, (layers, frequency.size)), cluster_size=1
    )
    path = bench_dir() / f"synthetic-7b-{layers}l-{dtype}"
    return synthetic_layout(cfg, plan, path, seed, dtype), frequency, plan


def synthetic_layout(
    cfg: ModelConfig,
    plan: SparsePlan,
    path: Path,
    seed: int = 0,
    dtype: StorageDtype = "f32",
    unit: int = 1,
):
    """The synthetic model's flash layout at ``path`` (units of ``unit`` neurons), written once
    (random normal weights, std 0.02) and reused while it opens with the same config, plan,
    unit and bundle dtype."""
    return cached_layout(
        path,
        lambda layout: (
            (layout.config, layout.plan, layout.cluster_size, layout.dtype)
            == (cfg, plan, unit, dtype)
        ),
        lambda: _write_synthetic(cfg, plan, path, seed, dtype, unit),
    )


def cached_layout(
    path: Path, fresh: Callable[[FlashLayout], bool], write: Callable[[], Path]
) -> FlashLayout:
    """The layout at ``path`` if it opens and is ``fresh``, else the one ``write()`` makes
    there. One process writes at a time (an exclusive lock on a file beside ``path``), so
    processes asking for the same layout at once (a sweep's workers) wait for the first
    rather than replace its files under each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            layout = open_layout(path)
            if fresh(layout):
                return layout
        except StorageError:
            pass
        return open_layout(write())


def bundled_layout(cluster_size: int | None = None, dtype: StorageDtype = "f32") -> FlashLayout:
    """The bundled model (with its predictors and plan) as a flash layout of ``dtype`` bundles
    in units of ``cluster_size`` neurons (default: :func:`convert`'s), converted once under
    :func:`pi2lab.fileio.bench_dir` and reused while it is newer than the model's files."""
    source = resolve("builtin")
    cfg = load_config(source)
    unit = cluster_size or default_cluster_size(cfg.intermediate_size, cfg.hidden_size, dtype)
    path = bench_dir() / f"{source.name}-c{unit}-{dtype}"
    newest = max(f.stat().st_mtime for f in source.iterdir() if f.is_file())

    def fresh(layout: FlashLayout) -> bool:
        same = (layout.config, layout.cluster_size, layout.dtype) == (cfg, unit, dtype)
        return same and (layout.path / HEADER).stat().st_mtime > newest

    return cached_layout(
        path, fresh, lambda: convert_pretrained(source, path, cluster_size=unit, dtype=dtype)
    )


def _write_synthetic(cfg, plan, path, seed, dtype, unit) -> Path:
    rng = np.random.default_rng(seed)
    d, f, g, k = cfg.hidden_size, cfg.intermediate_size, cfg.num_kv_heads, cfg.head_dim

    def normal(*shape):
        return (rng.standard_normal(shape, np.float32) * 0.02).astype(np.float32)

    def ffn(layer: int, name: str):
        if not cfg.is_moe:
            return normal(f, d)
        return _Experts(seed=(seed, layer, FFN_KEYS.index(name)), shape=(cfg.num_experts, f, d))

    shared = None
    if cfg.is_moe:
        # embeddings as large as attention's output (at std 0.02 the residual stream is
        # attention's average over the context, and routing follows the prompt), sharing a
        # direction each router row weighs with its expert's logit offset: experts' popularity
        # is then a property of the model, as a trained router's is, and not of the prompt
        shared = _unit_vector(rng, d)
        embed = rng.standard_normal((cfg.vocab_size, d), np.float32) + SHARED * shared
        embed = (embed * MOE_EMBED_STD).astype(np.float32)
    else:
        embed = normal(cfg.vocab_size, d)
    params = {
        "embed": embed,
        "final_norm": np.ones(d, np.float32),
        "layers": [
            {
                "attn_norm": np.ones(d, np.float32),
                "ffn_norm": np.ones(d, np.float32),
                "q": normal(d, cfg.num_heads, k),
                "k": normal(d, g, k),
                "v": normal(d, g, k),
                "o": normal(cfg.num_heads, k, d),
                **{name: ffn(i, name) for name in FFN_KEYS},
                **({"router": _router(rng, cfg, shared)} if cfg.is_moe else {}),
            }
            for i in range(cfg.num_layers)
        ],
    }
    if not cfg.tie_word_embeddings:
        params["lm_head"] = normal(cfg.vocab_size, d)
    return convert(cfg, params, path, dtype=dtype, cluster_size=unit, plan=plan)


@dataclasses.dataclass(frozen=True)
class _Experts:
    """An expert-stacked FFN matrix ``[E, F, D]`` drawn one expert at a time where it is read
    (:func:`pi2lab.convert.convert` reads each expert's rows once), so a layout of 7B-wide
    experts is written without every expert in memory at once."""

    seed: tuple
    shape: tuple[int, int, int]

    def __getitem__(self, e: int) -> np.ndarray:
        rng = np.random.default_rng((*self.seed, e))
        return rng.standard_normal(self.shape[1:], np.float32) * np.float32(0.02)


MOE_EMBED_STD = 0.5
"""Synthetic MoE: the embeddings' standard deviation (attention's output is of this size)."""
SHARED = 4.0
"""Synthetic MoE: the shared direction's weight in every embedding, in units of the embedding
entries' standard deviation; after the FFN norm every token's input has a component of a few
units along it."""


def _unit_vector(rng, d: int) -> np.ndarray:
    u = rng.standard_normal(d).astype(np.float32)
    return u / np.linalg.norm(u)


def _router(rng, cfg: ModelConfig, shared: np.ndarray) -> np.ndarray:
    """Router ``[E, D]``: random rows (std 0.02) plus, along the ``shared`` direction, logit
    offsets from +0.75 to -0.75 of the random part's spread across the experts (as a bias
    would add), so routing is skewed as trained routers' is and the skew holds for any
    tokens."""
    spread = 0.02 * np.sqrt(cfg.hidden_size)  # std of the random part of a logit
    offsets = np.linspace(0.75, -0.75, cfg.num_experts, dtype=np.float32) * spread
    rows = rng.standard_normal((cfg.num_experts, cfg.hidden_size), np.float32) * 0.02
    return (rows + (offsets / SHARED)[:, None] * shared).astype(np.float32)


def coactivated_model(
    layers: int,
    tokens: int,
    cluster_size: int = 4,
    seed: int = 0,
    fit: int = 1024,
    dtype: StorageDtype = "int4",
):
    """The synthetic model with co-activated firing (``bench sparse``'s latent groups of 64
    neurons) as a flash layout of ``dtype`` units of ``cluster_size`` neurons: the hot block and
    the cold neurons' co-activation order fitted on ``fit`` tokens, then cold-cluster masks
    ``[tokens, L, NC]`` from later tokens (each layer its own). The weights
    are random, so placing neurons in co-activation order is renumbering the masks' neurons;
    the units on flash hold neurons that fire together."""
    cfg = synthetic_config(layers, tie_word_embeddings=True)
    f = cfg.intermediate_size
    neurons = synthetic_masks("coactivated", f, 0.1, fit + tokens * layers, seed)
    plan = SparsePlan.from_frequency(
        np.broadcast_to(neurons[:fit].mean(0), (layers, f)), cluster_size=cluster_size
    )
    hot = plan.layers[0].hot
    perm = coactivation_order(neurons[:fit], hot, cluster_size)
    later = neurons[fit:, perm][:, hot:].reshape(tokens, layers, -1, cluster_size)
    path = bench_dir() / f"synthetic-7b-{layers}l-{dtype}-c{cluster_size}"
    layout = synthetic_layout(cfg, plan, path, seed, dtype, unit=cluster_size)
    return layout, later.any(-1)


def replay_masks(rng, frequency: np.ndarray, plan: SparsePlan, steps: int) -> np.ndarray:
    """Cold-cluster masks ``[steps, L, NC]`` (one-neuron clusters) from independent firing."""
    hot = plan.layers[0].hot
    return rng.random((steps, len(plan.layers), frequency.size - hot)) < frequency[hot:]


def ahead_masks(rng, masks: np.ndarray, recall: float, precision: float) -> np.ndarray:
    """Cross-layer predictions for replayed cold-cluster ``masks [T, L, NC]``: each active
    cluster kept with probability ``recall``, inactive ones added so that ``precision`` of the
    predicted clusters are active (a predictor with that recall and precision, not a trained
    one)."""
    keep = masks & (rng.random(masks.shape) < recall)
    active = masks.sum(-1, keepdims=True)
    false = recall * active * (1 - precision) / max(precision, 1e-6)
    rate = false / np.maximum(masks.shape[-1] - active, 1)
    return keep | (~masks & (rng.random(masks.shape) < rate))


def _replayed(masks: np.ndarray, ahead: np.ndarray | None) -> list[dict]:
    """One token's predictor entries from replayed masks ``[L, NC]`` (and their cross-layer
    predictions)."""
    return [
        {"clusters": jnp.asarray(m)} | ({} if ahead is None else {"ahead": ahead[i]})
        for i, m in enumerate(masks)
    ]


def _run_engines(
    layout,
    runs: dict,
    masks_for,
    steps: int,
    repeats: int,
    prompt,
    ahead=None,
    temperature: float = 0.0,
    timelines: bool = False,
) -> tuple[dict, dict]:
    """Opens every engine, then decodes ``steps`` tokens with each in turn, ``repeats`` times
    (a warm-up block first, not counted). ``masks_for(block) -> [steps, L, NC]`` (MoE:
    ``[steps, L, E, NC]``) or None; ``ahead(masks) -> [steps, L, NC]``: their cross-layer
    predictions (:func:`ahead_masks`). Greedy, or sampled at ``temperature`` with one key for
    all engines (the same tokens where the logits agree).

    Returns each engine's record (``blocks``: the :class:`~pi2lab.engine.offload.StepStats`
    of each counted block; ``memory_bytes``; with ``timelines``, ``timelines``: each block's
    last token as :meth:`Timeline.rows <pi2lab.pipeline.timeline.Timeline.rows>`), and the
    memory the engines say they hold (all open, after the warm-up block filled their caches)
    beside the process's resident memory growth since before the first opened."""
    knobs, key = SamplingKnobs.make(temperature), jax.random.key(0)
    engines, state, out = {}, {}, {}
    gc.collect()  # what earlier runs left is freed before the baseline, not during
    process = psutil.Process()
    rss0, memory = process.memory_info().rss, {}
    try:
        first = masks_for(0)
        replay = None if first is None else _replayed(first[0], None)
        for name, config in runs.items():
            config = dataclasses.replace(config, kv_capacity=512)
            eng = OffloadEngine(layout, config, predictors=replay)
            engines[name] = eng
            token = eng.prefill(prompt, key, knobs)
            state[name] = (len(prompt), token)
            out[name] = {"blocks": [], "timelines": [], "memory_bytes": eng.memory_bytes}
        for block in range(repeats + 1):
            masks = masks_for(block)
            predicted = None if masks is None or ahead is None else ahead(masks)
            for name, eng in engines.items():
                pos, token = state[name]
                stats = []
                for t in range(steps):
                    if masks is not None:  # replayed: the engine runs no predictor
                        eng.predictors = _replayed(
                            masks[t], None if predicted is None else predicted[t]
                        )
                    token, _ = eng.step(token, pos, key, knobs)
                    pos += 1
                    stats.append(eng.last)
                state[name] = (pos, token)
                if block:  # block 0 warms caches and compiles
                    out[name]["blocks"].append(stats)
                    if timelines:
                        out[name]["timelines"].append(eng.timeline.rows())
            if block == 0:
                memory = {
                    "accounted_mb": round(sum(e.memory_bytes for e in engines.values()) / 1e6, 1),
                    "rss_growth_mb": round((process.memory_info().rss - rss0) / 1e6, 1),
                }
    finally:
        for eng in engines.values():
            eng.close()
    return out, memory


def figures(stats: list) -> dict:
    """What decode tokens' :class:`~pi2lab.engine.offload.StepStats` add up to: tokens/s
    (1 / the median token's seconds), bytes and reads per token, hit rate, I/O share, and
    cross-layer prefetch's recall and precision where it ran."""
    units = sum(sum(s.units) for s in stats)
    hits = sum(sum(s.hits) for s in stats)
    seconds = float(np.median([s.seconds for s in stats]))
    return {
        "tokens_per_s": round(1.0 / seconds, 3),
        "ms_per_token": round(seconds * 1e3, 2),
        "tokens": len(stats),
        "mb_read_per_token": round(float(np.mean([s.bytes_read for s in stats])) / 1e6, 3),
        "reads_per_token": round(float(np.mean([s.reads for s in stats])), 1),
        "kb_per_read": round(
            sum(s.bytes_read for s in stats) / max(sum(s.reads for s in stats), 1) / 1024, 1
        ),
        "hit_rate": round(hits / max(units, 1), 4),
        "io_share": round(float(np.median([s.io_share for s in stats])), 4),
    } | _prefetch_summary(stats)


def _prefetch_summary(stats: list) -> dict:
    """Recall and precision of cross-layer prefetch (where it ran)."""
    prefetched = sum(s.prefetched for s in stats)
    if not prefetched:
        return {}
    used = sum(s.prefetch_used for s in stats)
    return {
        "prefetch_recall": round(used / max(sum(s.prefetch_misses for s in stats), 1), 4),
        "prefetch_precision": round(used / prefetched, 4),
    }


def _summary(record: dict) -> dict:
    """An engine's figures over every counted token, with each block's tokens/s as ``runs``."""
    return {
        **figures([s for block in record["blocks"] for s in block]),
        "runs": [figures(block)["tokens_per_s"] for block in record["blocks"]],
        "memory_mb": round(record["memory_bytes"] / 1e6, 1),
    }


def _summaries(records: dict) -> dict:
    return {name: _summary(record) for name, record in records.items()}


def policy_hit_rates(unit_masks: list[np.ndarray], capacity: int) -> dict:
    """Hit rate per policy replayed on per-layer unit masks ``[T, U]`` at ``capacity`` units
    (policies by registry name, built as the engine builds them)."""
    policies = {
        name: make_policy(name, units=unit_masks[0].shape[1], capacity=capacity)
        for name in ("lru", "lfu", "window-5", "static-hot", "segmented")
    }
    out = {}
    for name, policy in policies.items():
        rates = [simulate(policy, m, capacity, warmup=len(m) // 4).hit_rate for m in unit_masks]
        # the first quarter of the tokens warms the caches and is not counted
        out[name] = round(float(np.mean(rates)), 4)
    out["belady (bound)"] = round(
        float(
            np.mean(
                [
                    simulate(Belady.from_masks(m), m, capacity, warmup=len(m) // 4).hit_rate
                    for m in unit_masks
                ]
            )
        ),
        4,
    )
    return out


def units_from_clusters(plan: SparsePlan, clusters: np.ndarray, unit: int) -> np.ndarray:
    """Cold-cluster masks ``[T, NC]`` of one layer -> unit masks ``[T, U]`` (hot block set)."""
    lp = plan.layers[0]
    per = lp.cluster_size // unit
    hot = np.ones((len(clusters), lp.hot // unit), bool)
    return np.concatenate([hot, np.repeat(clusters, per, axis=1)], axis=1)


def _jax_sparse_rate(
    params, cfg, plan, masks: np.ndarray, weights: str | None = None, prompt_len: int = 4
) -> float:
    """Tokens/s of in-memory JAX sparse decode (``sparse_decode_step``) on replayed masks;
    ``weights`` (``"int8"``, ``"int4"``) quantizes the sparse-layout model as the offload
    engine holds a quantized layout (FFN rows, attention and embeddings; the same kernels)."""
    knobs, key = SamplingKnobs.make(), jax.random.key(0)
    cache = KVCache.zeros(cfg, 512)
    token, seconds = jnp.int32(1), []
    params = sparse_layout(params, plan)
    if weights is not None:
        params = quantize_params(params, weights)
    for t, m in enumerate(masks):
        preds = [{"clusters": jnp.asarray(x)} for x in m]
        t0 = time.perf_counter()
        token, _, cache, _ = sparse_decode_step(
            params,
            preds,
            jnp.float32(0),
            cfg,
            plan,
            cache,
            token,
            jnp.int32(prompt_len + t),
            key,
            knobs,
        )
        token.block_until_ready()
        seconds.append(time.perf_counter() - t0)
    return round(1.0 / float(np.median(seconds[2:])), 3)


def bench_bundled(steps: int, repeats: int, workdir: Path) -> dict:
    layout = open_layout(convert_pretrained("builtin", workdir / "pydoc-drelu"))
    prompt = load_pretrained("builtin").encode("Return the number of items in a sequence")
    records, memory = _run_engines(layout, ENGINE_RUNS, lambda b: None, steps, repeats, prompt)
    engines = _summaries(records)
    trace = ActivationTrace.load(data_dir() / "traces" / "pydoc-drelu.npz")
    c = layout.cluster_size
    masks = [
        trace.active(i)[:2048].reshape(-1, layout.units, c).any(-1)
        for i in range(layout.config.num_layers)
    ]
    return {
        "model": "pydoc-drelu (bundled)",
        "unit_kb": layout.stride / 1024,
        "ffn_mb": layout.ffn_bytes / 1e6,
        "engines": engines,
        "memory_check": memory,
        "policies_at_50%": policy_hit_rates(masks, layout.units // 2),
        "policy_note": "hit rates replayed on 2048 tokens of the recorded held-out trace "
        "(every neuron's true activation, unit = any of its neurons fires)",
    }


def _ahead_fn(predictor: tuple[float, float], seed: int):
    """Cross-layer predictions of replayed masks at ``predictor``'s (recall, precision)."""
    rng = np.random.default_rng(seed)
    return lambda masks: ahead_masks(rng, masks, *predictor)


def _ahead_note(predictor: tuple[float, float]) -> str:
    return (
        "prefetch on replayed masks: cross-layer predictions drawn at the recall "
        f"{predictor[0]:.2f} and precision {predictor[1]:.2f} measured for the bundled model's "
        "predictors (each layer's predictor on the previous layer's hidden state)"
    )


def bench_synthetic(
    steps: int,
    repeats: int,
    layers: int,
    seed: int = 0,
    dtype: StorageDtype = "int4",
    predictor: tuple[float, float] = (1.0, 1.0),
) -> dict:
    t0 = time.perf_counter()
    layout, frequency, plan = synthetic_model(layers, seed, dtype)
    cfg = layout.config
    setup_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed + 1)
    blocks = [replay_masks(rng, frequency, plan, steps) for _ in range(repeats + 1)]
    prompt = np.arange(1, 5, dtype=np.int32)
    runs = {**ENGINE_RUNS, **SYNTHETIC_EXTRA}
    records, memory = _run_engines(
        layout, runs, lambda b: blocks[b], steps, repeats, prompt, _ahead_fn(predictor, seed + 3)
    )
    engines = _summaries(records)
    params = jax.tree.map(jnp.asarray, layout.full_params())
    all_masks = np.concatenate(blocks[1:])
    quantized = dtype if dtype in ("int8", "int4") else None
    engines["in-memory JAX sparse decode"] = {
        "tokens_per_s": _jax_sparse_rate(params, cfg, plan, all_masks[: max(steps, 6)], quantized)
    }
    del params
    long = replay_masks(np.random.default_rng(seed + 2), frequency, plan, 256)
    unit_masks = [units_from_clusters(plan, long[:, i], 1) for i in range(min(layers, 2))]
    curve = measure_bandwidth(
        layout.file_path(0), block_sizes=(4096, 8192, 49152, 1 << 20), threads=(1, 2), seconds=0.3
    )
    return {
        "model": f"synthetic dReLU, {layers} layers of 7B shape (4096/14336), {dtype} bundles",
        "unit_kb": layout.stride / 1024,
        "ffn_mb": layout.ffn_bytes / 1e6,
        "hot_neurons": plan.layers[0].hot,
        "density": 0.1,
        "layout_setup_s": round(setup_s, 1),
        "prefetch_note": _ahead_note(predictor),
        "engines": engines,
        "memory_check": memory,
        "policies_at_50%": policy_hit_rates(unit_masks, layout.units // 2),
        "storage_curve": [
            {
                "block_kb": p.block / 1024,
                "threads": p.threads,
                "mb_per_s": round(p.mb_per_s, 1),
                "direct": p.direct,
            }
            for p in curve
        ],
    }


def bench_coactivated(
    steps: int,
    repeats: int,
    layers: int,
    cluster_size: int = 4,
    predictor: tuple[float, float] = (1.0, 1.0),
) -> dict:
    """The engines at 50% (and powerinfer2 at 60%, everything resident) on co-activated masks
    with units of ``cluster_size`` co-activated neurons on flash; ``predictor``: the (recall,
    precision) of the cross-layer predictions the prefetching engine gets."""
    long = 256  # later tokens for the policy replay
    layout, masks = coactivated_model(layers, (repeats + 1) * steps + long, cluster_size)
    blocks = masks[:-long].reshape(repeats + 1, steps, *masks.shape[1:])
    prompt = np.arange(1, 5, dtype=np.int32)
    records, memory = _run_engines(
        layout, ENGINE_RUNS, lambda b: blocks[b], steps, repeats, prompt, _ahead_fn(predictor, 5)
    )
    engines = _summaries(records)
    active = float(np.mean(blocks[1:]))
    return {
        "model": f"synthetic dReLU, {layers} layers of 7B shape, int4 bundles, co-activated "
        f"masks (10%), {cluster_size}-neuron units in co-activation order ({active:.1%} of cold "
        "units active)",
        "unit_kb": layout.stride / 1024,
        "ffn_mb": layout.ffn_bytes / 1e6,
        "prefetch_note": _ahead_note(predictor),
        "engines": engines,
        "memory_check": memory,
        "ratios": _ratios(engines),
        "policies_at_50%": policy_hit_rates(
            [
                units_from_clusters(layout.plan, masks[-long:, i], cluster_size)
                for i in range(min(layers, 2))
            ],
            layout.units // 2,
        ),
    }


def bench_precisions(steps: int, repeats: int, layers: int, seed: int = 0) -> dict:
    """powerinfer2 at 50% on the synthetic model's f32, int8 and int4 layouts (same weights
    before quantization, same replayed masks), one precision after another: bytes and reads
    per token, I/O share and speed."""
    rows = {}
    for dtype in ("f32", "int8", "int4"):
        layout, frequency, plan = synthetic_model(layers, seed, dtype)
        rng = np.random.default_rng(seed + 1)
        blocks = [replay_masks(rng, frequency, plan, steps) for _ in range(repeats + 1)]
        run = {"powerinfer2": ENGINE_RUNS["powerinfer2"]}
        prompt = np.arange(1, 5, dtype=np.int32)
        records, memory = _run_engines(
            layout, run, lambda b, blocks=blocks: blocks[b], steps, repeats, prompt
        )
        rows[dtype] = {"unit_kb": layout.stride / 1024, **_summary(records["powerinfer2"])}
        rows[dtype] |= {f"engine_{k}": v for k, v in memory.items()}
    return rows


MIXTRAL = dict(experts=8, top_k=2, density=0.15)  # TurboSparse-Mixtral: ~85% of each expert idle
MIXTRAL_RUNS = {name: ENGINE_RUNS[name] for name in ("powerinfer2", "llmflash", "dense-stream")}


def mixtral_model(
    layers: int, hidden: int = 4096, ffn: int = 14336, seed: int = 0, dtype: StorageDtype = "int4"
):
    """A Mixtral-shaped synthetic MoE (8 dReLU experts of ``hidden``/``ffn`` per layer, top-2,
    an LM head of its own) as a flash layout of ``dtype`` bundles in the smallest units
    without padding (one file per expert, written once under
    :func:`pi2lab.fileio.bench_dir`), with each expert's Zipf firing frequency ``[F]`` and the
    sparse plan."""
    cfg = synthetic_config(
        layers,
        hidden,
        ffn,
        architecture="mixtral",
        num_experts=MIXTRAL["experts"],
        num_experts_per_tok=MIXTRAL["top_k"],
        # a random tied head predicts the token it was given (its own embedding scores
        # highest), so decode would route one token over and over; an LM head of its own gives
        # near-flat logits, and sampled tokens route as varied text does
        tie_word_embeddings=False,
    )
    frequency = zipf_frequency(ffn, density=MIXTRAL["density"])
    unit = default_cluster_size(ffn, hidden, dtype)
    plan = SparsePlan.from_frequency(
        np.broadcast_to(frequency, (layers, frequency.size)), cluster_size=unit
    )
    path = bench_dir() / f"synthetic-mixtral-{hidden}-{ffn}-{layers}l-{dtype}"
    return synthetic_layout(cfg, plan, path, seed, dtype, unit), frequency, plan


def expert_masks(rng, frequency: np.ndarray, plan: SparsePlan, experts: int, steps: int):
    """Cold-cluster masks ``[steps, L, E, NC]``: every expert's neurons fire independently
    with ``frequency``, a cluster is active when any of its neurons is."""
    lp = plan.layers[0]
    cold = rng.random((steps, len(plan.layers), experts, frequency.size - lp.hot))
    fired = cold < frequency[lp.hot :]
    return fired.reshape(*fired.shape[:-1], -1, lp.cluster_size).any(-1)


def routing_profile(layout, masks: np.ndarray, prompt, temperature: float) -> np.ndarray:
    """Decode tokens routed to each expert ``[L, E]``: powerinfer2 at 50% sampling one token
    at ``temperature`` per mask of ``masks [T, L, E, NC]`` after ``prompt`` (a profile taken
    apart from the measured run, on other tokens)."""
    knobs, key = SamplingKnobs.make(temperature), jax.random.key(1)
    replay = [{"clusters": jnp.asarray(m)} for m in masks[0]]
    config = dataclasses.replace(ENGINE_RUNS["powerinfer2"], kv_capacity=512)
    with OffloadEngine(layout, config, predictors=replay) as eng:
        token, pos = eng.prefill(prompt, key, knobs), len(prompt)
        for m in masks:
            eng.predictors = [{"clusters": jnp.asarray(x)} for x in m]
            token, _ = eng.step(token, pos, key, knobs)
            pos += 1
        return eng.expert_counts.copy()


def bench_mixtral(
    steps: int,
    repeats: int,
    layers: int,
    *,
    hidden: int = 4096,
    ffn: int = 14336,
    profile_tokens: int = 32,
    seed: int = 0,
) -> dict:
    """powerinfer2, llmflash and dense-stream at 50% on the Mixtral-shaped synthetic, and
    powerinfer2 with each layer's cache shared among its experts by a routing profile of
    ``profile_tokens`` other tokens (:class:`~pi2lab.policies.ExpertAware`, counts + 1 so an
    expert the profile missed keeps a little). Tokens are sampled at temperature 1 (the
    random LM head's logits are near flat, so they vary as text does); routing is the model's
    own (its router on its hidden states); each routed expert's cold-cluster mask is
    replayed."""
    t0 = time.perf_counter()
    layout, frequency, plan = mixtral_model(layers, hidden, ffn, seed)
    setup_s = time.perf_counter() - t0
    experts = layout.config.num_experts
    rng = np.random.default_rng(seed + 1)
    blocks = [expert_masks(rng, frequency, plan, experts, steps) for _ in range(repeats + 1)]
    profile = expert_masks(rng, frequency, plan, experts, profile_tokens)
    counts = routing_profile(layout, profile, np.arange(7, 19, dtype=np.int32), temperature=1.0)
    runs = {
        **MIXTRAL_RUNS,
        "powerinfer2, expert-aware cache": OffloadConfig(
            memory_budget=0.5, policy=ExpertAware.from_routed(counts + 1)
        ),
    }
    prompt = np.arange(1, 5, dtype=np.int32)
    records, memory = _run_engines(
        layout, runs, lambda b: blocks[b], steps, repeats, prompt, temperature=1.0
    )
    engines = _summaries(records)
    rate = {name: row["tokens_per_s"] for name, row in engines.items()}
    pi2 = rate["powerinfer2"]
    active = float(np.mean(blocks[1:]))
    return {
        "model": f"synthetic Mixtral-shaped dReLU MoE, {layers} layers of {experts} experts "
        f"(top-{layout.config.num_experts_per_tok}) of {hidden}/{ffn}"
        + (" (7B width)" if hidden == 4096 else " (reduced from 4096/14336)")
        + f", int4 bundles, sampled tokens, Zipf masks at {MIXTRAL['density']:.0%} per expert "
        f"({active:.1%} of cold units active), hot block {plan.layers[0].hot} neurons",
        "unit_kb": layout.stride / 1024,
        "ffn_mb": layout.ffn_bytes / 1e6,
        "layout_setup_s": round(setup_s, 1),
        "engines": engines,
        "memory_check": memory,
        "ratios": {
            "powerinfer2 / llmflash (paper, Mixtral-47B: 4.15)": round(pi2 / rate["llmflash"], 2),
            "powerinfer2 / dense-stream (paper vs llama.cpp, Mixtral-47B: 19.9)": round(
                pi2 / rate["dense-stream"], 2
            ),
            "expert-aware / even cache split": round(
                rate["powerinfer2, expert-aware cache"] / pi2, 2
            ),
        },
        "expert_popularity": {
            "note": f"decode tokens routed to each expert in a {profile_tokens}-token profile",
            "counts": counts.tolist(),
        },
    }


def _ratios(engines: dict) -> dict:
    rate = {name: row["tokens_per_s"] for name, row in engines.items()}
    pi2 = rate["powerinfer2"]
    out = {
        "powerinfer2 / llmflash (target >= 3)": round(pi2 / rate["llmflash"], 2),
        "powerinfer2 / dense-stream (target >= 15)": round(pi2 / rate["dense-stream"], 2),
        "powerinfer2@60% / in-memory offload path (target >= 0.9)": round(
            rate["powerinfer2@60%"] / rate["in-memory (offload path, 100%)"], 2
        ),
    }
    if "in-memory JAX sparse decode" in rate:
        out["powerinfer2@60% / in-memory JAX sparse decode"] = round(
            rate["powerinfer2@60%"] / rate["in-memory JAX sparse decode"], 2
        )
    return out


# -- grids --------------------------------------------------------------------------------------
MODELS = ("bundled", "synthetic-7b")
KNOBS = (
    Knob(
        name="model",
        read=choice(*MODELS),
        default=("bundled",),
        help="the bundled model with its predictors, or the synthetic model of 7B layer shapes "
        "with co-activated masks (10%) replayed",
    ),
    Knob(name="engine", read=choice(*ENGINES), default=("powerinfer2",), help="offload engine"),
    Knob(name="budget", read=share(), default=(0.5,), help="neuron cache, share of the FFN bytes"),
    Knob(name="policy", read=policy_name, help="cache policy (default: the engine's)"),
    Knob(
        name="hot_fraction",
        read=share(zero=True),
        default=(0.5,),
        help="segmented policy: share of the cache in the hot segment",
    ),
    Knob(
        name="mode",
        read=choice(*typing.get_args(OverlapMode)),
        help="overlap of reads and compute: none, matrix, cluster (default: the engine's)",
    ),
    Knob(name="io_threads", read=count(), default=(1,), help="reader threads"),
    Knob(
        name="depth",
        read=count(),
        default=(PipelineConfig().depth,),
        help="units in flight (cluster overlap), also the staging rows",
    ),
    Knob(
        name="prefetch",
        read=count(0),
        default=(PipelineConfig().prefetch,),
        help="cross-layer prefetch: layers read ahead (0: off)",
    ),
    Knob(
        name="precision",
        read=choice(*BITS),
        help="bundles on flash: f32, f16, int8, int4 (default: f32 bundled, int4 synthetic)",
    ),
    Knob(
        name="cluster_size",
        read=count(),
        help="neurons per unit on flash, one read (default: convert's for the bundled model, "
        "1 for the synthetic one)",
    ),
)


def resolve_point(point: dict) -> dict:
    """A grid point with every default (None) replaced by what the engine or model uses."""
    p = dict(point)
    engine = OffloadConfig(engine=p["engine"])
    p["policy"] = p["policy"] or ENGINE_POLICY[p["engine"]]
    p["mode"] = p["mode"] or engine.pipeline_config().mode
    p["precision"] = p["precision"] or ("f32" if p["model"] == "bundled" else "int4")
    if p["cluster_size"] is None and p["model"] == "bundled":
        cfg = load_config(resolve("builtin"))
        p["cluster_size"] = default_cluster_size(
            cfg.intermediate_size, cfg.hidden_size, p["precision"]
        )
    p["cluster_size"] = p["cluster_size"] or 1
    return p


def point_config(point: dict) -> OffloadConfig:
    """The :class:`~pi2lab.engine.offload.OffloadConfig` of a resolved grid point."""
    return OffloadConfig(
        engine=point["engine"],
        memory_budget=MemoryBudget.share(point["budget"]),
        policy=point["policy"],
        hot_fraction=point["hot_fraction"],
        pipeline=PipelineConfig(
            mode=point["mode"],
            io_threads=point["io_threads"],
            depth=point["depth"],
            prefetch=point["prefetch"],
        ),
    )


def measure_points(
    points: list[dict], *, steps: int, repeats: int, layers: int, timelines: bool = False
) -> dict[int, dict]:
    """Measures resolved grid points (:func:`resolve_point`) on this machine: the points on
    one layout (model, precision, cluster size) opened together and interleaved block by
    block (:func:`_run_engines`), one layout after another.

    Returns point index -> the engine's record (``blocks``, ``memory_bytes``, ``timelines``)
    with ``model``: the layout's description."""
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(points):
        groups.setdefault((p["model"], p["precision"], p["cluster_size"]), []).append(i)
    out = {}
    for (model, precision, unit), members in groups.items():
        if model == "bundled":
            layout, masks = bundled_layout(unit, precision), None
            prompt = load_pretrained("builtin").encode("Return the number of items in a sequence")
            about = f"pydoc-drelu (bundled, its predictors), {precision} bundles"
        else:
            layout, masks = coactivated_model(layers, (repeats + 1) * steps, unit, dtype=precision)
            masks = masks.reshape(repeats + 1, steps, *masks.shape[1:])
            prompt = np.arange(1, 5, dtype=np.int32)
            about = (
                f"synthetic dReLU, {layers} layers of 7B shape, {precision} bundles, co-activated "
                "masks (10%) replayed (prefetch: exact cross-layer predictions)"
            )
        runs = {i: point_config(points[i]) for i in members}
        masks_for = (lambda b: None) if masks is None else (lambda b, m=masks: m[b])
        ahead = None if masks is None else _ahead_fn((1.0, 1.0), 5)
        records, _ = _run_engines(
            layout, runs, masks_for, steps, repeats, prompt, ahead, timelines=timelines
        )
        for i, record in records.items():
            out[i] = {
                **record,
                "model": f"{about}, {unit}-neuron units of {layout.stride / 1024:g} KiB",
            }
    return out


def bench_grid(grid: dict, steps: int, repeats: int, layers: int) -> dict:
    """One section per combination of ``grid``'s values (:data:`KNOBS`), named after them."""
    points = [resolve_point(p) for p in expand(grid, KNOBS)]
    records = measure_points(points, steps=steps, repeats=repeats, layers=layers)
    out = {"grid": {k: list(v) for k, v in grid.items()}}
    for i, (point, name) in enumerate(zip(points, labels(points, grid), strict=True)):
        out[name] = {
            "knobs": point,
            "model": records[i]["model"],
            "engines": {point["engine"]: _summary(records[i])},
        }
    return out


def bench_offload(
    quick: bool = False,
    steps: int | None = None,
    layers: int | None = None,
    grid: dict | None = None,
):
    """Every section of ``pi2lab bench offload`` (``quick``: fewer steps, the bundled model
    only unless ``layers`` is given); with ``grid`` (:data:`KNOBS` -> values) one section per
    combination instead (:func:`bench_grid`)."""
    steps = steps or (4 if quick else 12)
    repeats = 1 if quick else 3
    result = {"bench": "offload", "machine": machine()}
    if grid is not None:
        return {**result, **bench_grid(grid, steps, repeats, layers or (1 if quick else 4))}
    bench_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=bench_dir()) as tmp:  # O_DIRECT-capable, not tmpfs
        result["bundled"] = bench_bundled(steps, repeats, Path(tmp))
    result["bundled"]["ratios"] = _ratios(result["bundled"]["engines"])
    measured = result["bundled"]["engines"]["powerinfer2, prefetch 1"]
    predictor = (measured["prefetch_recall"], measured["prefetch_precision"])
    if not quick or layers:
        syn = bench_synthetic(steps, repeats, layers or 4, predictor=predictor)
        syn["ratios"] = _ratios(syn["engines"])
        result["synthetic_7b"] = syn
        result["synthetic_7b_coactivated"] = bench_coactivated(
            steps, repeats, layers or 4, predictor=predictor
        )
        result["synthetic_7b_precisions"] = {
            "note": "powerinfer2 at 50% per bundle precision (f32, int8, int4 layouts of the "
            "same weights, same masks), run one precision after another",
            "precisions": bench_precisions(steps, repeats, layers or 4),
        }
    # --quick: a quarter of the width (the 7B-wide experts' layout takes minutes to write)
    width = dict(hidden=1024, ffn=3584, profile_tokens=8) if quick else {}
    result["synthetic_mixtral"] = bench_mixtral(steps, repeats, layers or 2, **width)
    return result
