"""``pi2lab bench dense``: tokens/s of the jitted dense decode step on the bundled model and
on a synthetic model with Llama-7B layer shapes (random weights), with the weight bytes each
token reads and the bandwidth that implies (F32 decode reaches ~25-30 GB/s on a 2-core x86 CPU).
"""

from __future__ import annotations

import jax
import numpy as np

from pi2lab.bench.common import decode_rate, dense_step, machine
from pi2lab.bench.grid import Knob, choice, expand, labels
from pi2lab.config import ModelConfig
from pi2lab.model.params import init_params, quantize_params
from pi2lab.model.pretrained import load_pretrained

KNOBS = (
    Knob(
        name="model",
        read=choice("bundled", "synthetic-7b"),
        default=("bundled", "synthetic-7b"),
        help="the bundled model, the synthetic model of Llama-7B layer shapes",
    ),
    Knob(
        name="precision",
        read=choice("f32", "int8", "int4"),
        default=("f32",),
        help="weights in memory: f32, or quantized at load (the int8/int4 block format)",
    ),
)


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


def _model(name: str, layers: int) -> tuple[dict, ModelConfig, dict]:
    """The ``model`` knob's model: (params, config, description)."""
    if name == "bundled":
        model = load_pretrained("builtin")
        cfg = model.config
        about = {"model": str(model.path.name), "layers": cfg.num_layers}
        return (
            model.params,
            cfg,
            {
                **about,
                "hidden": cfg.hidden_size,
                "ffn": cfg.intermediate_size,
                "dtype": str(model.dtype),
            },
        )
    cfg = ModelConfig.synthetic_7b(num_layers=layers, intermediate_size=11008)
    about = {"layers": layers, "hidden": cfg.hidden_size, "ffn": cfg.intermediate_size}
    return (
        init_params(cfg, jax.random.key(0)),
        cfg,
        {**about, "vocab": cfg.vocab_size, "dtype": "float32"},
    )


def bench_dense(
    *,
    quick: bool = False,
    steps: int | None = None,
    layers: int | None = None,
    grid: dict | None = None,
) -> dict:
    """The bundled and the synthetic 7B-shaped model's dense decode in f32; with ``grid``
    (:data:`KNOBS` -> values, see :func:`pi2lab.bench.grid.parse_grid`) one section per
    combination of model and weight precision instead, named after its knob values."""
    steps = steps or (8 if quick else 64)
    layers = layers or (2 if quick else 4)
    out = {"bench": "dense", "machine": machine()}
    if grid is None:
        for name, section in (("bundled", "bundled"), ("synthetic-7b", "synthetic_7b")):
            params, cfg, about = _model(name, layers)
            n = steps if name == "bundled" else max(4, steps // 4)
            out[section] = {**about, **time_decode(params, cfg, steps=n)}
        return out
    out["grid"] = {k: list(v) for k, v in grid.items()}
    points = expand(grid, KNOBS)  # the model varies slowest: each is loaded once
    model = None
    for point, section in zip(points, labels(points, grid), strict=True):
        if point["model"] != model:
            model = point["model"]
            params, cfg, about = _model(model, layers)
        precision = point["precision"]
        quantized = precision != "f32"
        weights = quantize_params(params, precision) if quantized else params
        n = steps if model == "bundled" else max(4, steps // 4)
        out[section] = {
            "knobs": point,
            **about,
            **({"dtype": precision} if quantized else {}),
            **time_decode(weights, cfg, steps=n),
        }
    return out
