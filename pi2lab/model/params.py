"""Parameter trees: their layout, random initialisation, and the Hugging Face name mapping.

Internal layout (one dict per layer; FFN weights neuron-major so neuron i is row i of all three):

  embed [V, D], final_norm [D], lm_head [V, D] (absent when tied), layers: list of
  attn_norm [D], q [D, H, K], k [D, G, K], v [D, G, K], o [H, K, D], ffn_norm [D],
  gate / up / down [F, D]  (MoE: router [E, D], gate / up / down [E, F, D]).

Sparse layout (:func:`split_ffn`, built once for sparse decode): each layer's FFN as a hot
block ``hot_gate / hot_up / hot_down [H, D]`` and cluster-major cold neurons
``cold_gate / cold_up / cold_down [NC, C, D]`` (MoE: a leading ``[E]``), in hot-first order.
Every forward reads either layout (:func:`pi2lab.model.layers.ffn_blocks`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.config import ModelConfig
from pi2lab.errors import ConfigError
from pi2lab.quant.format import QuantKind, check_kind
from pi2lab.quant.ops import is_quantized, quantize, untransposed


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One checkpoint tensor: its Hugging Face name and shape, where it lives internally, and
    the transforms between the two layouts (numpy arrays)."""

    hf_name: str
    hf_shape: tuple[int, ...]
    path: tuple  # ("embed",) or ("layers", i, "q") or ("layers", i, "gate", expert)
    to_internal: Callable[[np.ndarray], np.ndarray]
    to_hf: Callable[[np.ndarray], np.ndarray]


def _same(a):
    return a


def _transpose(a):
    return np.ascontiguousarray(a.T)


def tensor_specs(cfg: ModelConfig) -> list[TensorSpec]:
    """Every tensor a Hugging Face checkpoint of ``cfg`` holds, in a stable order."""
    d, h, g, k, f = (
        cfg.hidden_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.intermediate_size,
    )

    def heads_in(n):  # HF [N*K, D] <-> internal [D, N, K]
        return (
            lambda a: np.ascontiguousarray(a.reshape(n, k, d).transpose(2, 0, 1)),
            lambda a: np.ascontiguousarray(a.transpose(1, 2, 0).reshape(n * k, d)),
        )

    o_in = (
        lambda a: np.ascontiguousarray(a.reshape(d, h, k).transpose(1, 2, 0)),
        lambda a: np.ascontiguousarray(a.transpose(2, 0, 1).reshape(d, h * k)),
    )
    specs = [TensorSpec("model.embed_tokens.weight", (cfg.vocab_size, d), ("embed",), _same, _same)]
    for i in range(cfg.num_layers):
        pre = f"model.layers.{i}."
        lay = ("layers", i)
        specs += [
            TensorSpec(pre + "input_layernorm.weight", (d,), (*lay, "attn_norm"), _same, _same),
            TensorSpec(pre + "self_attn.q_proj.weight", (h * k, d), (*lay, "q"), *heads_in(h)),
            TensorSpec(pre + "self_attn.k_proj.weight", (g * k, d), (*lay, "k"), *heads_in(g)),
            TensorSpec(pre + "self_attn.v_proj.weight", (g * k, d), (*lay, "v"), *heads_in(g)),
            TensorSpec(pre + "self_attn.o_proj.weight", (d, h * k), (*lay, "o"), *o_in),
            TensorSpec(
                pre + "post_attention_layernorm.weight", (d,), (*lay, "ffn_norm"), _same, _same
            ),
        ]
        if cfg.is_moe:
            moe = pre + "block_sparse_moe."
            specs.append(
                TensorSpec(
                    moe + "gate.weight", (cfg.num_experts, d), (*lay, "router"), _same, _same
                )
            )
            for e in range(cfg.num_experts):
                ex = f"{moe}experts.{e}."
                specs += [
                    TensorSpec(ex + "w1.weight", (f, d), (*lay, "gate", e), _same, _same),
                    TensorSpec(ex + "w3.weight", (f, d), (*lay, "up", e), _same, _same),
                    TensorSpec(ex + "w2.weight", (d, f), (*lay, "down", e), _transpose, _transpose),
                ]
        else:
            specs += [
                TensorSpec(pre + "mlp.gate_proj.weight", (f, d), (*lay, "gate"), _same, _same),
                TensorSpec(pre + "mlp.up_proj.weight", (f, d), (*lay, "up"), _same, _same),
                TensorSpec(
                    pre + "mlp.down_proj.weight", (d, f), (*lay, "down"), _transpose, _transpose
                ),
            ]
    specs.append(TensorSpec("model.norm.weight", (d,), ("final_norm",), _same, _same))
    if not cfg.tie_word_embeddings:
        specs.append(TensorSpec("lm_head.weight", (cfg.vocab_size, d), ("lm_head",), _same, _same))
    return specs


def assemble(cfg: ModelConfig, leaves: dict[tuple, np.ndarray], dtype) -> dict:
    """Builds the parameter tree from ``{spec.path: internal array}`` (experts are stacked).
    Float arrays become ``dtype``; quantized ones (:class:`~pi2lab.quant.ops.QArray`) keep
    theirs."""
    params: dict = {"layers": [{} for _ in range(cfg.num_layers)]}
    experts: dict[tuple, dict[int, np.ndarray]] = {}

    def device(a):
        if is_quantized(a):
            return jax.tree.map(jnp.asarray, a)
        return jnp.asarray(a, dtype)

    for path, arr in leaves.items():
        if path[0] == "layers" and len(path) == 4:
            experts.setdefault(path[:3], {})[path[3]] = arr
        elif path[0] == "layers":
            params["layers"][path[1]][path[2]] = device(arr)
        else:
            params[path[0]] = device(arr)
    for (_, i, name), by_expert in experts.items():
        stacked = jax.tree.map(
            lambda *a: np.stack(a), *[by_expert[e] for e in range(cfg.num_experts)]
        )
        params["layers"][i][name] = device(stacked)
    return params


def leaf(params: dict, path: tuple) -> jax.Array:
    """The array at ``spec.path`` (an expert's slice for 4-part MoE paths; of both arrays of
    a quantized one)."""
    node = params
    for part in path:
        node = node.rows(lambda a, part=part: a[part]) if is_quantized(node) else node[part]
    return node


def init_params(cfg: ModelConfig, key: jax.Array, dtype=jnp.float32, std: float = 0.02) -> dict:
    """Random parameters: normal(0, std) matrices (output projections scaled by depth), unit
    norms. Used for training from scratch and for synthetic benchmark models."""
    leaves = {}
    depth_scale = 1.0 / np.sqrt(2 * cfg.num_layers)
    specs = tensor_specs(cfg)
    keys = jax.random.split(key, len(specs))
    for spec, k in zip(specs, keys, strict=True):
        if len(spec.hf_shape) == 1:
            leaves[spec.path] = np.ones(spec.hf_shape, np.float32)
            continue
        scale = std * (
            depth_scale
            if spec.path[-1] in ("o", "down") or (len(spec.path) == 4 and spec.path[2] == "down")
            else 1.0
        )
        hf = jax.random.normal(k, spec.hf_shape, jnp.float32) * scale
        leaves[spec.path] = spec.to_internal(np.asarray(hf))
    return assemble(cfg, leaves, dtype)


FFN_KEYS = ("gate", "up", "down")


def is_split(layer: dict) -> bool:
    """Whether a layer's FFN is in the sparse layout (hot block + cluster-major cold)."""
    return "cold_gate" in layer


def split_ffn(params: dict, hot: list[int], cluster_size: list[int]) -> dict:
    """Parameters with each layer's FFN in the sparse layout: neurons ``[0, hot[i])`` as the
    hot block, the rest as ``[NC, C, D]`` clusters of ``cluster_size[i]`` neurons.

    A layer already split with the same hot size and cluster size is kept as it is; one split
    differently is merged first. Other parameters are shared, not copied.
    """
    layers = []
    for p, h, c in zip(params["layers"], hot, cluster_size, strict=True):
        if is_split(p):
            if p["hot_gate"].shape[-2] == h and p["cold_gate"].shape[-2] == c:
                layers.append(p)
                continue
            p = merge_ffn({"layers": [p]})["layers"][0]
        f = p["gate"].shape[-2]
        if not 0 <= h <= f or c <= 0 or (f - h) % c:
            raise ConfigError(
                f"sparse layout: hot={h}, cluster_size={c} leave {f - h} cold neurons; "
                f"expected 0 <= hot <= {f} and the cold neurons a multiple of cluster_size"
            )
        rest = {k: v for k, v in p.items() if k not in FFN_KEYS}
        for k in FFN_KEYS:  # [..., F, D] (quantized: both of its arrays alike)
            w = untransposed(p[k]) if is_quantized(p[k]) else p[k]
            rest[f"hot_{k}"] = jax.tree.map(lambda a, h=h: a[..., :h, :], w)
            rest[f"cold_{k}"] = jax.tree.map(
                lambda a, h=h, c=c: a[..., h:, :].reshape(*a.shape[:-2], -1, c, a.shape[-1]),
                w,
            )
        layers.append(rest)
    return {**params, "layers": layers}


def merge_ffn(params: dict) -> dict:
    """The inverse of :func:`split_ffn`: every layer's FFN as whole ``[F, D]`` matrices."""
    layers = []
    for p in params["layers"]:
        if not is_split(p):
            layers.append(p)
            continue
        rest = {k: v for k, v in p.items() if not k.startswith(("hot_", "cold_"))}
        for k in FFN_KEYS:
            rest[k] = jax.tree.map(
                lambda hot, cold: jnp.concatenate(
                    [hot, cold.reshape(*cold.shape[:-3], -1, cold.shape[-1])], axis=-2
                ),
                p[f"hot_{k}"],
                p[f"cold_{k}"],
            )
        layers.append(rest)
    return {**params, "layers": layers}


def quantized_kind(params: dict) -> QuantKind | None:
    """The quantization of ``params`` (:func:`quantize_params`), or None for float weights."""
    head = params["embed"]
    return head.kind if is_quantized(head) else None


def quantize_params(params: dict, kind: str) -> dict:
    """``params`` with every matrix quantized to ``kind`` (``"int8"`` or ``"int4"``, the block
    format of :mod:`pi2lab.quant.format`); norms and the MoE router stay float.

    Matrices are stored one output per row, quantized along the reduction axis: ``embed`` and
    ``lm_head [V, D]``, ``q [H*K, D]``, ``k``/``v [G*K, D]``, ``o [D, H*K]``, ``gate``/``up
    [(E,) F, D]``, and a dense FFN's ``down`` as ``[D, F]`` (``transposed``, read as dot
    products like the others, as llama.cpp stores it). In the sparse layout, and for experts,
    ``down`` stays one neuron per row (``[(E,) F, D]``) so that a sparse FFN reads whole rows;
    quantize after :func:`split_ffn` (splitting a transposed ``down`` quantizes it again).
    Already quantized params are returned as they are.

    Raises:
      ConfigError: an unknown ``kind``, params quantized to another kind, or a matrix whose
        rows do not tile into blocks of 32 (the message names it).
    """
    kind = check_kind(kind)
    have = quantized_kind(params)
    if have is not None:
        if have != kind:
            raise ConfigError(f"weights={kind!r}: these parameters are already {have}")
        return params

    def q(w, name, transpose_from: int | None = None):
        a = np.asarray(w, np.float32)
        if transpose_from is not None:  # [*in, *out] -> [prod(out), prod(in)]
            a = np.ascontiguousarray(a.reshape(int(np.prod(a.shape[:transpose_from])), -1).T)
        return quantize(a, kind, name)

    out = {**params, "embed": q(params["embed"], "embed")}
    if "lm_head" in params:
        out["lm_head"] = q(params["lm_head"], "lm_head")
    layers = []
    for i, p in enumerate(params["layers"]):
        new = dict(p)
        for k in ("q", "k", "v"):  # [D, N, K] -> [N*K, D]
            new[k] = q(p[k], f"layers.{i}.{k}", transpose_from=1)
        new["o"] = q(p["o"], f"layers.{i}.o", transpose_from=2)  # [H, K, D] -> [D, H*K]
        for k, w in p.items():
            if k == "down" and w.ndim == 2:  # a dense FFN: [F, D] stored as [D, F]
                new[k] = quantize(np.asarray(w, np.float32), kind, f"layers.{i}.{k}", True)
            elif k in FFN_KEYS or k.startswith(("hot_", "cold_")):
                new[k] = q(w, f"layers.{i}.{k}")
        layers.append(new)
    return {**out, "layers": layers}
