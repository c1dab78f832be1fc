"""Summaries for ``pi2lab info``, ``convert`` and ``verify``: a checkpoint's architecture, shapes,
parameter count and bytes by component (read from the safetensors headers without loading the
weights), the sparse kernel and sparse model's memory, and a flash layout's figures."""

from __future__ import annotations

import os

from pi2lab.errors import CheckpointError
from pi2lab.model.params import tensor_specs
from pi2lab.model.pretrained import load_config, open_safetensors, resolve, weight_files

_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I8": 1, "U8": 1}


def component(path: tuple) -> str:
    """Which part of the model a parameter path belongs to."""
    name = path[2] if path[0] == "layers" else path[0]
    if name in ("embed", "lm_head"):
        return "embeddings"
    if name in ("q", "k", "v", "o"):
        return "attention"
    if name.endswith("norm"):
        return "norms"
    return "ffn"


def model_info(path_or_name: str | os.PathLike) -> dict:
    path = resolve(path_or_name)
    cfg = load_config(path)
    where = weight_files(path)
    handles = {}
    params = {"embeddings": 0, "attention": 0, "ffn": 0, "norms": 0}
    nbytes = dict.fromkeys(params, 0)
    dtypes = set()
    for spec in tensor_specs(cfg):
        file = where.get(spec.hf_name)
        if file is None:
            raise CheckpointError(f"{path}: tensor {spec.hf_name!r} is missing")
        fh = handles.setdefault(file, open_safetensors(file))
        meta = fh.get_slice(spec.hf_name)
        n = 1
        for s in meta.get_shape():
            n *= s
        group = component(spec.path)
        params[group] += n
        nbytes[group] += n * _DTYPE_BYTES.get(meta.get_dtype(), 4)
        dtypes.add(meta.get_dtype())
    return {
        "path": str(path),
        "architecture": cfg.architecture,
        "ffn_activation": cfg.ffn_activation,
        "layers": cfg.num_layers,
        "hidden": cfg.hidden_size,
        "ffn_neurons": cfg.intermediate_size,
        "heads": f"{cfg.num_heads} query / {cfg.num_kv_heads} kv, head dim {cfg.head_dim}",
        "experts": f"top-{cfg.num_experts_per_tok} of {cfg.num_experts}" if cfg.is_moe else "-",
        "vocab": cfg.vocab_size,
        "context": cfg.max_position_embeddings,
        "sliding_window": cfg.sliding_window or "-",
        "dtypes": ",".join(sorted(dtypes)),
        "parameters": sum(params.values()),
        **{f"params_{k}": v for k, v in params.items()},
        "bytes": sum(nbytes.values()),
        **{f"bytes_{k}": v for k, v in nbytes.items()},
    }
