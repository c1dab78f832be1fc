"""``pi2lab bench dense``: tokens/s of the jitted dense decode step on the bundled model and
on a synthetic model with Llama-7B layer shapes (random weights), with the weight bytes each
token reads and the bandwidth that implies (F32 decode reaches ~25-30 GB/s on a 2-core x86 CPU).
"""

from __future__ import annotations

import jax
import numpy as np

from pi2lab.bench.common import decode_rate, dense_step, machine
from pi2lab.config import ModelConfig
from pi2lab.model.params import init_params
from pi2lab.model.pretrained import load_pretrained


def decode_weight_bytes(params: dict, cfg: ModelConfig) -> int:
    """Weight bytes one dense decode step reads: everything but the embedding table (one row is
    read), with the LM head counted once (tied or not); all experts for MoE (dense compute)."""
    leaves = sum(a.nbytes for a in jax.tree.leaves(params))
    if not cfg.tie_word_embeddings:
        leaves -= params["embed"].nbytes
    return int(leaves)


def time_decode(
    params: dict,
    cfg: ModelConfig,
    *,
    steps: int,
    prompt_len: int = 16,
    repeats: int = 3,
) -> dict:
    """Median greedy decode tokens/s over ``repeats`` runs of ``steps`` steps (after a warm-up)."""
    step = dense_step(params, cfg)
    rates = [decode_rate(step, params, cfg, steps, prompt_len) for _ in range(repeats + 1)][1:]
    tps = float(np.median(rates))
    weight_bytes = decode_weight_bytes(params, cfg)
    return {
        "tokens_per_s": round(tps, 2),
        "runs_tokens_per_s": [round(x, 2) for x in rates],
        "decode_steps": steps,
        "weight_mb_per_token": round(weight_bytes / 1e6, 1),
        "implied_gb_per_s": round(weight_bytes * tps / 1e9, 1),
    }


def bench_dense(
    *, quick: bool = False, steps: int | None = None, layers: int | None = None
) -> dict:
    steps = steps or (8 if quick else 64)
    layers = layers or (2 if quick else 4)
    model = load_pretrained("builtin")
    bundled = time_decode(model.params, model.config, steps=steps)
    cfg7b = ModelConfig.synthetic_7b(num_layers=layers, intermediate_size=11008)
    params7b = init_params(cfg7b, jax.random.key(0))
    synthetic = time_decode(params7b, cfg7b, steps=max(4, steps // 4))
    return {
        "bench": "dense",
        "machine": machine(),
        "bundled": {
            "model": str(model.path.name),
            "layers": model.config.num_layers,
            "hidden": model.config.hidden_size,
            "ffn": model.config.intermediate_size,
            "dtype": str(model.dtype),
            **bundled,
        },
        "synthetic_7b": {
            "layers": layers,
            "hidden": cfg7b.hidden_size,
            "ffn": cfg7b.intermediate_size,
            "vocab": cfg7b.vocab_size,
            "dtype": "float32",
            **synthetic,
        },
    }
