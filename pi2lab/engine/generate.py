"""``generate``: dense prefill, then one jitted decode step per new token, one KV cache."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.budget import MemoryBudget
from pi2lab.engine.decode import decode_step, sample_first
from pi2lab.engine.offload import ENGINES, OffloadConfig, OffloadEngine
from pi2lab.engine.prefill import bucket, check_tokens, pad, prefill
from pi2lab.engine.sampling import SamplingKnobs
from pi2lab.engine.sparse import SparseDecoder
from pi2lab.errors import ConfigError, PromptError
from pi2lab.model.kv_cache import KVCache
from pi2lab.pipeline.scheduler import PipelineConfig

MIN_CAPACITY = 128


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """What ``generate`` produced and how fast.

    Attributes:
      prompt_tokens: The prompt's token ids ``[P]``.
      tokens: The new token ids ``[N]``.
      text: The new tokens decoded (empty when the model has no tokenizer).
      stop_reason: ``"eos"`` or ``"length"``.
      prefill_s: Prefill wall time, first call compile included.
      decode_tokens_per_s: Decode steps per second, measured after the first (compiling) step;
        NaN when fewer than two steps ran.
      decode_steps_timed: How many steps that figure covers.
    """

    prompt_tokens: np.ndarray
    tokens: np.ndarray
    text: str
    stop_reason: Literal["eos", "length"]
    prefill_s: float
    decode_tokens_per_s: float
    decode_steps_timed: int

    def to_json(self) -> dict:
        return {
            "prompt_tokens": int(self.prompt_tokens.size),
            "new_tokens": int(self.tokens.size),
            "text": self.text,
            "stop_reason": self.stop_reason,
            "prefill_s": round(self.prefill_s, 4),
            "decode_tokens_per_s": round(self.decode_tokens_per_s, 2),
            "decode_steps_timed": self.decode_steps_timed,
        }


def generate(
    model,
    prompt: str | np.ndarray,
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    stop_at_eos: bool = True,
    engine: Literal["dense", "sparse", "powerinfer2", "llmflash", "dense-stream"] = "dense",
    sparse: SparseDecoder | None = None,
    memory_budget: MemoryBudget | str | float = 0.5,
    threshold: float = 0.0,
    pipeline: PipelineConfig | None = None,
) -> GenerationResult:
    """Generates up to ``max_new_tokens`` after ``prompt`` (text, or token ids ``[P]``).

    ``temperature=0`` is greedy. Sampling knobs are traced: changing them does not recompile.
    ``engine="sparse"`` decodes with a sparse FFN set up by ``sparse`` (default: the oracle
    predictor with every neuron cold, which reproduces dense decode); prefill stays dense and
    both engines share one KV cache. The offload engines (``powerinfer2``, ``llmflash``,
    ``dense-stream``, see :mod:`pi2lab.engine.offload`) take as ``model`` a flash layout
    directory (written by ``pi2lab convert``) or an open :class:`OffloadEngine`, and decode
    within ``memory_budget``; a directory is opened with the predictor logit ``threshold``
    (the sparse engine's is in ``sparse``) and ``pipeline`` (overlap mode, I/O threads,
    cross-layer prefetch depth; default per engine).

    Raises:
      ConfigError: an unknown engine, or a sampling knob out of range (temperature < 0,
        top_k < 0, top_p outside (0, 1]); checked before any weights are read.
      PromptError: an empty prompt, or prompt plus new tokens longer than the context.
    """
    if engine not in ("dense", "sparse", *ENGINES):
        raise ConfigError(f"engine={engine!r}: expected one of dense, sparse, {', '.join(ENGINES)}")
    knobs = SamplingKnobs.make(temperature, top_k, top_p)
    args = (prompt, max_new_tokens, knobs, seed, stop_at_eos)
    if engine not in ENGINES:
        return _generate(model, None, engine, sparse, *args)
    if isinstance(model, OffloadEngine):
        return _generate(model.model, model, engine, None, *args)
    config = OffloadConfig(
        engine=engine, memory_budget=memory_budget, threshold=threshold, pipeline=pipeline
    )
    with OffloadEngine(model, config) as eng:
        return _generate(eng.model, eng, engine, None, *args)


def _generate(
    model,
    offload,
    engine,
    sparse,
    prompt,
    max_new_tokens,
    knobs,
    seed,
    stop_at_eos,
) -> GenerationResult:
    cfg = model.config
    if engine == "dense":
        step = functools.partial(decode_step, model.params, cfg)
    elif engine == "sparse":
        sparse = sparse or SparseDecoder.oracle(cfg)
        sparse.plan.check(cfg)
        step = functools.partial(sparse.step, sparse.layout(model.params), cfg)
    if max_new_tokens < 1:
        raise PromptError(f"max_new_tokens={max_new_tokens}: expected at least 1")
    if isinstance(prompt, str) and not prompt.strip():
        raise PromptError("the prompt is empty: expected some text")
    ids = model.encode(prompt) if isinstance(prompt, str) else prompt
    ids = check_tokens(ids, cfg)
    total = ids.size + max_new_tokens
    if total > cfg.max_position_embeddings:
        raise PromptError(
            f"prompt ({ids.size} tokens) + max_new_tokens ({max_new_tokens}) = "
            f"{total} exceeds the model's context of "
            f"{cfg.max_position_embeddings} tokens"
        )
    capacity = min(bucket(total, MIN_CAPACITY), cfg.max_position_embeddings)
    key = jax.random.key(seed)

    t0 = time.perf_counter()
    if offload is not None:
        token = offload.prefill(ids, key, knobs, capacity=capacity)
        step = lambda cache, token, pos, key, knobs: (
            *offload.step(token, int(pos), key, knobs),
            None,
        )
        cache = None
    else:
        cache = KVCache.zeros(cfg, capacity, dtype=model.dtype)
        logits, cache = prefill(
            model.params,
            cfg,
            pad(ids, min(bucket(ids.size), capacity)),
            jnp.int32(ids.size),
            cache,
        )
        token = sample_first(logits, jnp.int32(ids.size - 1), key, knobs)
    token.block_until_ready()
    prefill_s = time.perf_counter() - t0

    eos = set(cfg.eos_token_id) if stop_at_eos else set()
    out = [int(token)]
    stop = "eos" if out[0] in eos else "length"
    t_first = None
    pos = ids.size
    while stop == "length" and len(out) < max_new_tokens:
        token, _, cache = step(cache, token, np.int32(pos), key, knobs)  # np: no dispatch
        out.append(int(token))  # host sync: batch-1 decode is latency-bound anyway
        pos += 1
        if t_first is None:
            t_first = time.perf_counter()
        if out[-1] in eos:
            stop = "eos"
    steps_timed = len(out) - 2
    rate = steps_timed / (time.perf_counter() - t_first) if steps_timed > 0 else float("nan")
    tokens = np.asarray(out, np.int32)
    text = model.decode(tokens) if model.tokenizer is not None else ""
    return GenerationResult(
        prompt_tokens=ids,
        tokens=tokens,
        text=text,
        stop_reason=stop,
        prefill_s=prefill_s,
        decode_tokens_per_s=rate,
        decode_steps_timed=max(steps_timed, 0),
    )
