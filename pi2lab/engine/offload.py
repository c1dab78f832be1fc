"""Offloaded decode: FFN weights on flash, a budgeted neuron cache in memory, reads overlapped.

Three engines on the same parts (flash layout, I/O engine, neuron cache, scheduler):

- ``powerinfer2``: predictor, segmented cache (cluster-granular hot segment pre-filled from the
  profile, unit-granular LRU cold segment), cluster-level pipeline.
- ``llmflash``: predictor, sliding-window cache (neurons of the last k tokens), row-column
  bundles, matrix-level overlap (LLM in a Flash).
- ``dense-stream``: no predictor; the first units of every layer stay resident within the
  budget and the rest are re-read, in order, every token (llama.cpp's mmap past RAM size).

Per layer and token, attention and the predictor run jitted in JAX (the resident part: embeddings,
attention, norms, predictors, scales, KV cache); the cold-cluster mask comes to the host, which
decides the units, runs the cache and reads, and computes the FFN in NumPy while reads land
(:mod:`pi2lab.pipeline.scheduler`). Prefill is dense: each layer's FFN is streamed through the
staging rows (resident units in place), so a long prompt does not need the whole layer in memory.

MoE layers (Mixtral): every expert has its own bundle file, cache and store. On the compute side
a jitted router (:func:`_moe_front`, after the layer's attention) picks each row's top-k experts
and weights as in-memory sparse decode does, and for decode runs the routed experts' predictors
(or replays their masks, ``[E, NC]`` per layer); on the host each routed expert's FFN runs
through the same scheduler and cache as a dense layer's (its hot block cached, its cold
clusters read on demand) and the outputs are summed by router weight. Prefill and dense-stream
stream each routed expert's units for the rows routed to it.

Memory budget: a :class:`~pi2lab.budget.MemoryBudget`, total bytes (resident tensors + KV cache
+ staging rows + neuron cache) or the neuron cache's share of the FFN bytes on top of the rest.
Every FFN (every expert) gets the same cache, unless ``layer_units`` sets each or an
:class:`~pi2lab.policies.ExpertAware` policy shares each MoE layer's by expert popularity.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl
import tokenizers

from pi2lab.budget import MemoryBudget
from pi2lab.cache.neuron_cache import NeuronCache
from pi2lab.engine.prefill import bucket, check_tokens
from pi2lab.engine.sampling import SamplingKnobs, sample
from pi2lab.errors import ConfigError
from pi2lab.kernels.predictor import scores
from pi2lab.kernels.sparse_ffn import cluster_activity
from pi2lab.kernels.sparse_plan import ClusterPlan, SparsePlan
from pi2lab.model import layers
from pi2lab.model.params import quantize_params
from pi2lab.model.pretrained import Model
from pi2lab.model.transformer import attention_block, lm_head
from pi2lab.pipeline.scheduler import (
    Buffers,
    FfnStore,
    PipelineConfig,
    Prefetcher,
    Scheduler,
    prefetch_rows,
    staging_rows,
)
from pi2lab.pipeline.timeline import Timeline
from pi2lab.policies import ExpertAware, Policy
from pi2lab.policies.registry import make_policy, parse_policy
from pi2lab.quant.format import KINDS
from pi2lab.quant.ops import take_rows
from pi2lab.storage.io import IOEngine, ReadRequest
from pi2lab.storage.layout import FlashLayout, open_layout, predictor_layers, resident_params

EngineKind = Literal["powerinfer2", "llmflash", "dense-stream"]
ENGINES: tuple[str, ...] = ("powerinfer2", "llmflash", "dense-stream")
ENGINE_POLICY = {"powerinfer2": "segmented", "llmflash": "window-5", "dense-stream": "static-hot"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class OffloadConfig:
    """An offload engine's settings (all static: changing one builds a new engine).

    Attributes:
      engine: Which engine (see the module docstring).
      memory_budget: A :class:`~pi2lab.budget.MemoryBudget`, or what
        :meth:`MemoryBudget.of <pi2lab.budget.MemoryBudget.of>` reads (``"2GB"``, ``"50%"``,
        a float share).
      pipeline: Overlap mode, depth, I/O threads, gate-first; default per engine.
      policy: Cache policy, or its name (:mod:`pi2lab.policies.registry`); default per engine
        (:data:`ENGINE_POLICY`). MoE: an :class:`~pi2lab.policies.ExpertAware` shares each
        layer's cache among its experts by popularity, each expert running its ``inner`` policy.
      hot_fraction: Segmented: share of each layer's cache in the hot segment.
      hot_region: Segmented: the hot region (units managed as hot clusters) over the hot
        segment's size. 1 (default): the segment holds exactly the profile's hottest clusters,
        filled at start; above 1 the hot segment runs LRU over hot clusters of a larger region.
      threshold: Predictor logit threshold.
      layer_units: Cache capacity of each FFN in units (e.g. from the planner), one per bundle
        file (layers x experts for MoE, layer-major); overrides the even split of the budget.
      kv_capacity: KV cache positions.
      direct: Read with O_DIRECT (bypassing the page cache) where the filesystem allows.
    """

    engine: EngineKind = "powerinfer2"
    memory_budget: MemoryBudget | str | float = 0.5
    pipeline: PipelineConfig | None = None
    policy: Policy | ExpertAware | str | None = None
    hot_fraction: float = 0.5
    hot_region: float = 1.0
    threshold: float = 0.0
    layer_units: tuple[int, ...] | None = None
    kv_capacity: int = 256
    direct: bool = True

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ConfigError(f"engine {self.engine!r}: expected one of {', '.join(ENGINES)}")
        if isinstance(self.policy, str):
            parse_policy(self.policy)
        object.__setattr__(self, "memory_budget", MemoryBudget.of(self.memory_budget))

    def pipeline_config(self) -> PipelineConfig:
        if self.pipeline is not None:
            return self.pipeline
        mode = {"powerinfer2": "cluster", "llmflash": "matrix", "dense-stream": "none"}
        return PipelineConfig(mode=mode[self.engine])

    def policy_for(self, units: int, capacity: int) -> Policy:
        """The cache policy of an FFN (an expert's, for MoE) of ``units`` units with
        ``capacity`` slots."""
        if isinstance(self.policy, Policy):
            return self.policy
        name = self.policy.inner if isinstance(self.policy, ExpertAware) else self.policy
        return make_policy(
            name or ENGINE_POLICY[self.engine],
            units=units,
            capacity=capacity,
            hot_fraction=self.hot_fraction,
            hot_region=self.hot_region,
        )


def resident_model(layout: FlashLayout, tensors: dict) -> dict:
    """The parameter tree the engine holds (everything but the FFN bundles), from the layout's
    resident ``tensors``: in the bundles' block format where those are int8/int4 (attention,
    embeddings and LM head quantized alike, the whole model as a phone deploys it), float
    otherwise."""
    params = resident_params(layout, tensors)
    return quantize_params(params, layout.dtype) if layout.dtype in KINDS else params


def fixed_bytes(cfg, params: dict, tensors: dict, kv_capacity: int) -> int:
    """What the engine holds whatever the budget: its resident ``params``
    (:func:`resident_model`), the layout's other resident tensors (bundle scales, predictors,
    checksums) and a float32 KV cache of ``kv_capacity`` positions."""
    kv = 2 * cfg.num_layers * kv_capacity * cfg.num_kv_heads * cfg.head_dim * 4
    other = sum(a.nbytes for k, a in tensors.items() if "." in k and not k.startswith("layers."))
    return sum(a.nbytes for a in jax.tree.leaves(params)) + other + kv


def _check_experts(layout: FlashLayout, config: OffloadConfig) -> int:
    """Experts per layer (1 for a dense model); refuses an :class:`ExpertAware` policy that
    does not fit the layout."""
    cfg = layout.config
    experts = cfg.num_experts if cfg.is_moe else 1
    policy = config.policy
    if isinstance(policy, ExpertAware):
        if not cfg.is_moe:
            raise ConfigError(
                f"{layout.path}: an ExpertAware cache policy needs an MoE model; this one has "
                f"no experts (expected policy={policy.inner!r})"
            )
        if policy.shape != (cfg.num_layers, experts):
            raise ConfigError(
                f"ExpertAware popularity of {policy.shape[0]} layers x {policy.shape[1]} "
                f"experts: expected {cfg.num_layers} x {experts} (the layout's)"
            )
        if config.layer_units is not None:
            raise ConfigError(
                "layer_units and an ExpertAware policy both size the caches: expected one"
            )
    return experts


@functools.partial(jax.jit, static_argnames=("cfg", "lp", "mode"), donate_argnames=("k", "v"))
def _layer_front(p, pred, threshold, cfg, lp: ClusterPlan, mode, x, delta, k, v, pos):
    """Adds the previous layer's FFN output ``delta [T, D]`` to ``x [1, T, D]``, runs this
    layer's attention at ``pos``; returns ``x``, the FFN input ``h``, and for decode the
    cold-cluster mask of the predictor (``mode``: predict, replay, all, none)."""
    x = x + delta.astype(x.dtype)[None]
    t = x.shape[1]
    q_pos = pos + jnp.arange(t)
    x, k, v = attention_block(
        p, cfg, x, q_pos, jnp.arange(k.shape[1]), layers.rope_inv_freq(cfg), (k, v), pos
    )
    h = layers.rms_norm(x, p["ffn_norm"], cfg.rms_norm_eps)
    nc = lp.num_clusters(cfg.intermediate_size)
    if mode == "predict":
        clusters = cluster_activity(scores(pred, x[0, 0]) > threshold, lp)
    elif mode == "replay":
        clusters = pred["clusters"]
    else:
        clusters = jnp.ones(nc if mode == "all" else 0, bool)
    return x, h[0], clusters, k, v


@functools.partial(jax.jit, static_argnames=("lp",))
def _ahead(pred, threshold, lp: ClusterPlan, x):
    """A later layer's cold-cluster mask predicted from this layer's hidden state ``x [1, T,
    D]`` (after attention) by that layer's predictor ``pred``: cross-layer prefetch."""
    return cluster_activity(scores(pred, x[0, 0]) > threshold, lp)


@functools.partial(jax.jit, static_argnames=("cfg", "lp", "mode"))
def _moe_front(router, pred, threshold, cfg, lp: ClusterPlan, mode, x, h):
    """Compute side of an MoE layer, after its attention (:func:`_layer_front`): the router's
    top-k experts ``[T, k]`` int32 and their weights ``[T, k]`` for each row of the FFN input
    ``h [T, D]`` (a softmax over the top-k router logits, as in-memory sparse decode takes them:
    :func:`pi2lab.model.layers.moe_routing`, then ``top_k``), and for decode (``T == 1``) each
    routed expert's cold-cluster mask ``[k, NC]``: its predictor on the residual stream
    ``x [1, 1, D]`` (``predict``, leaves ``[E, ...]``) or its replayed row of
    ``pred["clusters"] [E, NC]`` (``replay``); ``[k, 0]`` for ``none``."""
    k = cfg.num_experts_per_tok
    weights = layers.moe_routing(h[None], router, k)[0]  # [T, E]
    top_w, top_e = jax.lax.top_k(weights, k)  # [T, k]
    if mode not in ("predict", "replay"):
        return top_w, top_e, jnp.zeros((k, 0), bool)
    masks = []
    for j in range(k):
        expert = jax.tree.map(
            lambda a, e=top_e[0, j]: jax.lax.dynamic_index_in_dim(a, e, 0, False), pred
        )
        if mode == "replay":
            masks.append(expert["clusters"])
        else:
            masks.append(cluster_activity(scores(expert, x[0, 0]) > threshold, lp))
    return top_w, top_e, jnp.stack(masks)


@jax.jit
def _embed(embed, tokens):
    return take_rows(embed, tokens)[None]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _head(params, cfg, x, delta, last, key, pos, knobs):
    """Samples after row ``last`` of ``x [1, T, D]`` plus the last FFN output ``delta``
    (the key of position ``pos``)."""
    x = layers.rms_norm(
        x[0, last] + delta[last].astype(x.dtype), params["final_norm"], cfg.rms_norm_eps
    )
    head = params["embed"] if cfg.tie_word_embeddings else params["lm_head"]
    logits = lm_head(x[None, None], head)[0, 0]
    return sample(logits, jax.random.fold_in(key, pos), knobs), logits


@dataclasses.dataclass(frozen=True)
class StepStats:
    """What one decode token did.

    Attributes:
      seconds: Wall time of the token.
      units: Units computed, per layer (summed over the routed experts for MoE).
      hits: Of those, cache hits, per layer.
      bytes_read: Bytes read from flash.
      reads: Read requests issued to the device (after coalescing).
      io_share: Time blocked on reads over wall time.
      prefetched: Units read ahead by cross-layer prefetch.
      prefetch_used: Of the misses of layers that were read ahead for, those found read ahead
        (over ``prefetch_misses``: the prefetch's recall; over ``prefetched``: its precision).
      prefetch_misses: Misses of the layers that were read ahead for.
    """

    seconds: float
    units: list[int]
    hits: list[int]
    bytes_read: int
    io_share: float
    reads: int = 0
    prefetched: int = 0
    prefetch_used: int = 0
    prefetch_misses: int = 0


class OffloadEngine:
    """A model decoding from its flash layout within a memory budget. A context manager:
    :meth:`close` joins the I/O threads; an error mid-token leaves it closable."""

    def __init__(
        self,
        layout: FlashLayout | str,
        config: OffloadConfig | None = None,
        *,
        predictors: list | None = None,
        plan: SparsePlan | None = None,
    ):
        self.layout = layout = layout if isinstance(layout, FlashLayout) else open_layout(layout)
        self.config = config = config or OffloadConfig()
        cfg = layout.config
        tensors = layout.resident()
        self.params = jax.tree.map(jnp.asarray, resident_model(layout, tensors))
        tok_file = layout.path / "tokenizer.json"
        self.model = Model(
            config=cfg,
            params=self.params,
            tokenizer=tokenizers.Tokenizer.from_file(str(tok_file)) if tok_file.is_file() else None,
            path=layout.path,
        )
        self.predictors = (
            predictors if predictors is not None else predictor_layers(layout, tensors)
        )
        self.plan = plan or layout.plan or SparsePlan.uniform(cfg, cluster_size=layout.cluster_size)
        self.plan.check(cfg)
        c = layout.cluster_size
        for i, lp in enumerate(self.plan.layers):
            if lp.hot % c or lp.cluster_size % c:
                raise ConfigError(
                    f"sparse plan layer {i}: hot={lp.hot}, cluster_size={lp.cluster_size} must "
                    f"be multiples of the layout's unit of {c} neurons"
                )
        if config.engine != "dense-stream" and self.predictors is None:
            raise ConfigError(
                f"{layout.path}: no predictors in the layout; the {config.engine} engine needs "
                "them (train with `pi2lab train-predictors` before `pi2lab convert`), or pass "
                "replayed cluster masks"
            )
        self.pipeline = config.pipeline_config()
        fixed = fixed_bytes(cfg, self.params, tensors, config.kv_capacity)
        stage_rows = staging_rows(self.pipeline, layout.stride)
        staging_bytes = (stage_rows + prefetch_rows(self.pipeline)) * layout.stride
        n_ffn = len(layout.files)
        experts = _check_experts(layout, config)
        if config.layer_units is not None:
            caps = list(config.layer_units)
            if len(caps) != n_ffn or not all(0 <= c <= layout.units for c in caps):
                per = f" ({cfg.num_layers} layers x {experts} experts)" if cfg.is_moe else ""
                raise ConfigError(
                    f"layer_units {caps}: expected {n_ffn} capacities{per} in "
                    f"0..{layout.units} units"
                )
        else:
            per_ffn = config.memory_budget.cache_units(
                minimum=fixed + staging_bytes,
                unit_bytes=layout.stride,
                units=layout.units,
                ffns=n_ffn,
                parts={"resident tensors and KV cache": fixed, "staging": staging_bytes},
            )
            caps = [per_ffn] * n_ffn
            if isinstance(config.policy, ExpertAware):  # each layer's total, shared by popularity
                caps = config.policy.capacities(per_ffn, layout.units)
        config.memory_budget.check(
            fixed + staging_bytes + sum(caps) * layout.stride,
            {
                "resident tensors and KV cache": fixed,
                "staging": staging_bytes,
                "neuron cache": sum(caps) * layout.stride,
            },
        )
        self.io = IOEngine(
            [layout.file_path(i) for i in range(n_ffn)],
            threads=self.pipeline.io_threads,
            direct=config.direct,
            coalesce=self.pipeline.coalesce,
        )
        try:
            self.timeline = Timeline()
            self.staging = Buffers(layout.stride, stage_rows)
            self.scheduler = Scheduler(layout, self.io, self.pipeline, self.timeline)
            self.prefetcher = (
                Prefetcher(layout, self.io, self.pipeline, self.staging)
                if self.pipeline.prefetch
                else None
            )
            self.stores = []
            for i in range(n_ffn):
                policy = config.policy_for(layout.units, caps[i])
                cache = NeuronCache(policy, layout.units, caps[i])
                scales = tensors.get(f"scales.{i}")
                store = FfnStore(layout, i, cache, scales, self.staging)
                hot_units = self.plan.layers[layout.files[i].layer].hot // layout.cluster_size
                store.gate_first_from = max(store.gate_first_from, hot_units)
                self.stores.append(store)
            self._fill_prefilled()
        except BaseException:
            self.io.close()
            raise
        # one BLAS thread: the host FFN is memory-bound matrix-vector work, and a second BLAS
        # thread contends with XLA's pool and the I/O threads for the cores (2 cores, 4 layers
        # of 7B shape, interleaved: 109 vs 116 ms per token all resident, 262 vs 265 at 50%)
        self._blas = threadpoolctl.ThreadpoolController()
        self.fixed_bytes = fixed
        self.cache_units = caps
        # MoE: decode tokens routed to each expert, per layer (ExpertAware.from_routed reads it)
        self.expert_counts = np.zeros((cfg.num_layers, experts), np.int64)
        self.t = 0
        self.kv = None
        self.last: StepStats | None = None
        self.requests: list | None = None  # a list: each decode token's units per FFN go here

    # -- memory -----------------------------------------------------------------------------
    @property
    def memory_bytes(self) -> int:
        """Resident tensors + KV cache + staging + neuron cache slots."""
        return self.fixed_bytes + self.staging.nbytes

    def _fill_prefilled(self) -> None:
        """Reads the units the policies hold from the start (static / segmented hot sets)."""
        for store in self.stores:
            units = np.flatnonzero(store.cache.slot_of >= 0)
            reqs = [
                ReadRequest(
                    store.index,
                    int(u) * self.layout.stride,
                    self.layout.stride,
                    store.slots[store.cache.slot_of[u]],
                    (-1, int(u)),
                )
                for u in units
            ]
            if reqs:
                self.io.read(reqs)
        self.io.clear_log()

    def close(self) -> None:
        self.io.close()

    def __enter__(self) -> OffloadEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- FFN ------------------------------------------------------------------------------------
    def _store(self, layer: int, expert: int | None = None) -> FfnStore:
        """The store of a layer's FFN (of one of its experts, for MoE)."""
        return self.stores[self.layout.file_index(layer, expert)]

    def _units(self, i: int, clusters: np.ndarray) -> np.ndarray:
        lp, c = self.plan.layers[i], self.layout.cluster_size
        per = lp.cluster_size // c
        cold = np.flatnonzero(clusters)
        hot = np.arange(lp.hot // c)
        return np.concatenate([hot, lp.hot // c + (cold[:, None] * per + np.arange(per)).ravel()])

    def _dense_ffn(self, store: FfnStore, layer: int, x: np.ndarray) -> np.ndarray:
        """All units, for ``x [T, D]``: resident ones in place, the rest streamed in order."""
        slot_of = store.cache.slot_of
        res = np.flatnonzero(slot_of >= 0)
        out = self.scheduler.compute_resident(store, layer, x, res, slot_of[res])
        rest = np.flatnonzero(slot_of < 0)
        rows = len(self.staging.rows)
        for a in range(0, rest.size, rows):
            part = rest[a : a + rows]
            reqs = [
                ReadRequest(
                    store.index,
                    int(u) * self.layout.stride,
                    self.layout.stride,
                    self.staging.rows[j],
                    (layer, int(u)),
                )
                for j, u in enumerate(part)
            ]
            with self.timeline.span("wait", layer):
                self.io.read(reqs)
            with self.timeline.span("compute", layer, part.size):
                out = out + store.compute(
                    x,
                    self.staging.rows,
                    np.arange(part.size),
                    part,
                    *self.scheduler.act,
                )
        return out

    def _moe_ffn(self, layer: int, p: dict, x, h, h_np: np.ndarray, decode: bool):
        """An MoE layer's FFN for ``h [T, D]``: the router and the routed experts' predictors
        run on the compute side (:func:`_moe_front`, jitted); on the host each routed expert's
        FFN runs through its own store (decode: the scheduler, computing its hot block and the
        clusters its mask marks; prefill and dense-stream: every unit, streamed), weighted by
        the router and summed in the order in-memory sparse decode sums them.

        Returns the output ``[T, D]``, units computed and cache hits among them."""
        mode, preds = self._predictor_mode(decode)
        lp = self.plan.layers[layer]
        with self.timeline.span("attention", layer):
            top_w, top_e, clusters = _moe_front(
                p["router"],
                None if preds is None else preds[layer],
                np.float32(self.config.threshold),
                self.layout.config,
                lp,
                mode,
                x,
                h,
            )
            top_w, top_e, clusters = np.asarray(top_w), np.asarray(top_e), np.asarray(clusters)
        if decode:
            np.add.at(self.expert_counts[layer], top_e[0], 1)
        out = np.zeros(h_np.shape, np.float32)
        units = hits = 0
        if mode == "none":  # every unit of each routed expert, for the rows routed to it
            for e in np.unique(top_e):
                rows, js = np.nonzero(top_e == e)
                store = self._store(layer, int(e))
                hits += int(np.sum(store.cache.slot_of >= 0))
                y = self._dense_ffn(store, layer, h_np[rows])
                out[rows] += top_w[rows, js][:, None] * y
                units += self.layout.units
            return out, units, hits
        for j, e in enumerate(top_e[0].tolist()):
            store = self._store(layer, e)
            need = self._units(layer, clusters[j])
            if self.requests is not None:
                self.requests.append((self.t, store.index, need))
            hits += int(np.sum(store.cache.slot_of[need] >= 0))
            out[0] += top_w[0, j] * self.scheduler.run(store, layer, h_np[0], need, self.t)
            units += need.size
        return out, units, hits

    # -- prefill and decode ----------------------------------------------------------------------
    def _predictor_mode(self, decode: bool) -> tuple[str, list | None]:
        if not decode or self.config.engine == "dense-stream":
            return "none", None
        if self.predictors and "clusters" in self.predictors[0]:
            return "replay", self.predictors
        return "predict", self.predictors

    def _front_mode(self, decode: bool) -> tuple[str, list | None]:
        # MoE: the predictors run per routed expert, after the router (_moe_ffn)
        return ("none", None) if self.layout.config.is_moe else self._predictor_mode(decode)

    def _ahead_targets(self, i: int, mode: str) -> list[int]:
        """The layers whose units are read ahead when layer ``i``'s FFN is done: ``i + depth``
        (from layer 0: ``1 .. depth``), within the model."""
        d, n = self.pipeline.prefetch, self.layout.config.num_layers
        if self.prefetcher is None or mode == "none":
            return []
        return [j for j in (range(1, d + 1) if i == 0 else [i + d]) if j < n]

    def _ahead_mask(self, j: int, mode: str, preds: list, x):
        """Layer ``j``'s cold-cluster mask as predicted at the current layer: its predictor on
        the current hidden state, or with replayed masks the ``"ahead"`` mask they carry."""
        if mode == "predict":
            return _ahead(preds[j], np.float32(self.config.threshold), self.plan.layers[j], x)
        if "ahead" not in preds[j]:
            raise ConfigError(
                f"prefetch depth {self.pipeline.prefetch} with replayed masks: layer {j}'s "
                "entry has no 'ahead' mask (the prediction of its clusters made a layer "
                "earlier); expected {'clusters': ..., 'ahead': ...}"
            )
        return preds[j]["ahead"]

    def _run(self, tokens: np.ndarray, pos: int, decode: bool):
        cfg = self.layout.config
        mode, preds = self._front_mode(decode)
        x = _embed(self.params["embed"], tokens)  # [1, T, D]
        out = np.zeros((tokens.size, cfg.hidden_size), np.float32)
        units, hits = [], []
        ahead_for: set[int] = set()  # layers read ahead for this token
        self.prefetch_counts = dict.fromkeys(("prefetched", "used", "misses"), 0)
        for i, p in enumerate(self.params["layers"]):
            lp = self.plan.layers[i]
            pred = None if preds is None else preds[i]
            with self.timeline.span("attention", i):
                x, h, clusters, k, v = _layer_front(
                    p,
                    pred,
                    np.float32(self.config.threshold),
                    cfg,
                    lp,
                    mode,
                    x,
                    out,
                    self.kv[0][i],
                    self.kv[1][i],
                    np.int32(pos),
                )
                self.kv[0][i], self.kv[1][i] = k, v
                targets = self._ahead_targets(i, mode)
                masks = [self._ahead_mask(j, mode, preds, x) for j in targets]
                h_np = np.asarray(h)  # [T, D]
                clusters = np.asarray(clusters)
            store = self._store(i)
            if cfg.is_moe:
                out, n, hit = self._moe_ffn(i, p, x, h, h_np, decode)
                units.append(n)
                hits.append(hit)
            elif mode == "none":
                out = self._dense_ffn(store, i, h_np)
                units.append(self.layout.units)
                hits.append(int(np.sum(store.cache.slot_of >= 0)))
            else:
                need = self._units(i, clusters)
                if self.requests is not None:
                    self.requests.append((self.t, i, need))
                before = store.cache.slot_of[need] >= 0
                ahead = self.prefetcher.take(i) if self.prefetcher else {}
                out = self.scheduler.run(store, i, h_np[0], need, self.t, ahead)[None]
                units.append(need.size)
                hits.append(int(before.sum()))
                if i in ahead_for:
                    counts = self.prefetch_counts
                    counts["used"] += int(np.isin(need[~before], list(ahead)).sum())
                    counts["misses"] += int((~before).sum())
                    self.prefetcher.release(i)
                for j, m in zip(targets, masks, strict=True):
                    units_j = self._units(j, np.asarray(m))
                    self.prefetch_counts["prefetched"] += self.prefetcher.issue(
                        j, self._store(j), units_j
                    )
                    ahead_for.add(j)
        return x, out, units, hits

    def reset(self, capacity: int | None = None) -> None:
        cfg = self.layout.config
        shape = (1, capacity or self.config.kv_capacity, cfg.num_kv_heads, cfg.head_dim)
        self.kv = (
            [jnp.zeros(shape) for _ in range(cfg.num_layers)],
            [jnp.zeros(shape) for _ in range(cfg.num_layers)],
        )

    def prefill(self, tokens, key, knobs: SamplingKnobs, capacity: int | None = None):
        """Dense prefill of ``tokens [P]`` from position 0 into a fresh KV cache of
        ``capacity`` positions (default: the config's); returns the first new token."""
        tokens = check_tokens(tokens, self.layout.config)
        self.reset(capacity)
        padded = np.zeros(bucket(tokens.size), np.int32)  # bucketed: one compile per bucket
        padded[: tokens.size] = tokens
        with (
            self._blas.limit(limits=1, user_api="blas"),
            self.timeline.span("prefill", -1, tokens.size),
        ):
            x, out, _, _ = self._run(padded, 0, decode=False)
            last = np.int32(tokens.size - 1)
            token, _ = _head(self.params, self.layout.config, x, out, last, key, last, knobs)
        return token

    def step(self, token, pos: int, key, knobs: SamplingKnobs):
        """One decode token at ``pos``: returns the next token and logits ``[V]``."""
        if self.prefetcher:
            self.prefetcher.reset()  # reads an earlier token's error left in flight
        self.io.clear_log()
        self.timeline.events.clear()
        start = time.perf_counter()
        with self._blas.limit(limits=1, user_api="blas"):
            x, out, units, hits = self._run(np.asarray([int(token)], np.int32), pos, decode=True)
        with self.timeline.span("head", -1):
            token, logits = _head(
                self.params, self.layout.config, x, out, np.int32(0), key, np.int32(pos), knobs
            )
            token.block_until_ready()
        self.timeline.add_reads(list(self.io.log))
        self.t += 1
        self.last = StepStats(
            seconds=time.perf_counter() - start,
            units=units,
            hits=hits,
            bytes_read=sum(r.io_bytes for r in self.io.log),
            io_share=self.timeline.io_share(),
            reads=len(self.io.log),
            prefetched=self.prefetch_counts["prefetched"],
            prefetch_used=self.prefetch_counts["used"],
            prefetch_misses=self.prefetch_counts["misses"],
        )
        return token, logits
