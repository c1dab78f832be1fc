"""Model statistics for the cost model, from a flash layout and request traces.

A *request trace* is what the offload engine asks its caches for: per decode token and FFN,
the units it computes (hot block plus predicted clusters). It is recorded by running the engine
with everything resident (:func:`record_requests`), or built from replayed masks. Hit-rate
curves come from replaying it through the same policy objects the engine builds
(:func:`pi2lab.cache.simulate`) at a grid of capacities. :func:`plan_layout` runs it all
for one layout and budget and hands the statistics to the planner.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import tokenizers

from pi2lab.budget import MemoryBudget
from pi2lab.cache import simulate
from pi2lab.engine.offload import OffloadConfig, OffloadEngine, fixed_bytes, resident_model
from pi2lab.engine.sampling import SamplingKnobs
from pi2lab.errors import ConfigError
from pi2lab.pipeline.scheduler import PipelineConfig, staging_rows
from pi2lab.plan.cost import LayerStats, ModelStats, PlanChoice, calibrate
from pi2lab.plan.hardware import HardwareProfile
from pi2lab.plan.planner import ExecutionPlan, plan
from pi2lab.policies.registry import make_policy
from pi2lab.storage.layout import FFN_KEYS, FlashLayout

POLICIES = ("segmented-0.5", "segmented-0.8", "lru", "window-5")


PROMPTS = ("Return the number of items", "The default value of the", "If the file does not")


def default_prompts(layout: FlashLayout) -> list[np.ndarray]:
    """Prompts to record requests with: short texts when the layout has a tokenizer, else
    fixed token ids."""
    tok = layout.path / "tokenizer.json"
    if not tok.is_file():
        vocab = layout.config.vocab_size
        return [(np.arange(1, 9, dtype=np.int32) * (i + 1)) % vocab for i in range(3)]
    t = tokenizers.Tokenizer.from_file(str(tok))
    return [np.asarray(t.encode(text).ids, np.int32) for text in PROMPTS]


def record_requests(
    layout: FlashLayout, prompts: list[np.ndarray], tokens: int, **engine_kwargs
) -> tuple[list[np.ndarray], float]:
    """Greedy-decodes ``tokens`` tokens after each prompt with every unit resident; returns
    the unit masks ``[T, U]`` per FFN and the median seconds per token of that run (the
    first token, which compiles, left out).

    Raises:
      ConfigError: ``tokens`` below 1, or fewer than 2 tokens in all.
    """
    if tokens < 1 or len(prompts) * tokens < 2:
        raise ConfigError(
            f"{len(prompts)} prompts x {tokens} tokens: expected at least 1 token per prompt "
            "and 2 in all (the first is not timed)"
        )
    config = OffloadConfig(memory_budget=1.0, policy="static-hot", kv_capacity=512)
    masks = [[] for _ in layout.files]
    seconds = []
    knobs, key = SamplingKnobs.make(), jax.random.key(0)
    with OffloadEngine(layout, config, **engine_kwargs) as eng:
        for prompt in prompts:
            tok, pos = eng.prefill(prompt, key, knobs), len(prompt)
            eng.requests = []
            for _ in range(tokens):
                t0 = time.perf_counter()
                tok, _ = eng.step(tok, pos, key, knobs)
                seconds.append(time.perf_counter() - t0)
                pos += 1
            for _, i, need in eng.requests:
                row = np.zeros(layout.units, bool)
                row[need] = True
                masks[i].append(row)
    return [np.stack(m) for m in masks], float(np.median(seconds[1:]))


def layout_stats(
    layout: FlashLayout,
    masks: list[np.ndarray],
    *,
    policies=POLICIES,
    grid: int = 8,
    kv_capacity: int = 512,
    depth: int = 64,
    fires: float = 1.0,
) -> ModelStats:
    """Per-FFN statistics of ``layout`` under request masks ``[T, U]`` per FFN."""
    cfg = layout.config
    tensors = layout.resident()
    fixed = fixed_bytes(cfg, resident_model(layout, tensors), tensors, kv_capacity)
    staging = staging_rows(PipelineConfig(depth=depth), layout.stride) * layout.stride
    u = layout.units
    caps = tuple(sorted({round(u * k / grid) for k in range(grid + 1)}))
    layers = []
    for i, m in enumerate(masks):
        warm = len(m) // 4
        hits = {
            label: tuple(
                # everything resident: no misses once warm (the replay's first touches are not
                # steady state)
                1.0
                if c == u
                else simulate(make_policy(label, units=u, capacity=c), m, c, warmup=warm).hit_rate
                if c
                else 0.0
                for c in caps
            )
            for label in policies
        }
        resident = sum(
            a.nbytes
            for k, a in tensors.items()
            if k.startswith((f"layers.{i}.", f"predictors.{i}."))
            and k.split(".")[-1] not in FFN_KEYS
        )
        layers.append(
            LayerStats(
                units=u,
                unit_bytes=layout.stride,
                needed=float(m.sum(1).mean()),
                fires=fires,
                resident_bytes=resident,
                capacities=caps,
                hit_rates=hits,
            )
        )
    head = tensors["embed"].nbytes if cfg.tie_word_embeddings else tensors["lm_head"].nbytes
    return ModelStats(
        name=str(layout.path.name),
        layers=tuple(layers),
        head_bytes=head,
        fixed_bytes=fixed,
        staging_bytes=staging,
    )


def plan_layout(
    layout: FlashLayout,
    memory_budget: MemoryBudget,
    profile: HardwareProfile,
    *,
    tokens: int = 16,
    cpu_threads: int | None = None,
    min_tokens_per_s: float | None = None,
) -> tuple[ExecutionPlan, float]:
    """The planner's plan for ``layout``: records its requests with everything resident
    (``tokens`` greedy tokens after each of :func:`default_prompts`), fits the host overhead
    to that run, and solves within ``memory_budget`` (bytes, or a share of the FFN bytes on top
    of what stays resident). Returns the plan and the all-resident seconds per token.

    Raises:
      ConfigError: ``tokens`` below 1.
      BudgetError: see :func:`pi2lab.plan.planner.plan`.
    """
    masks, resident_s = record_requests(layout, default_prompts(layout), tokens)
    stats = calibrate(layout_stats(layout, masks), profile, resident_s, PlanChoice())
    chosen = plan(
        stats,
        profile,
        memory_budget,
        cpu_threads=cpu_threads,
        min_tokens_per_s=min_tokens_per_s,
        gate_first=layout.cluster_size == 1,
    )
    return chosen, resident_s
