"""Summaries for ``pi2lab info``, ``convert`` and ``verify``: a checkpoint's architecture, shapes,
parameter count and bytes by component (read from the safetensors headers without loading the
weights), the sparse kernel and sparse model's memory, and a flash layout's figures."""

from __future__ import annotations

import os

from pi2lab.errors import CheckpointError
from pi2lab.kernels.ffi import kernel_status
from pi2lab.model.params import tensor_specs
from pi2lab.model.pretrained import load_config, open_safetensors, resolve, weight_files
from pi2lab.predict.sparsify import load_sparse
from pi2lab.storage.layout import RESIDENT, FlashLayout

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


def kernel_info() -> dict:
    """Which sparse FFN kernel runs here and why (:func:`pi2lab.kernels.ffi.kernel_status`),
    each key prefixed with ``kernel``."""
    return {f"kernel {k}": v for k, v in kernel_status().items()}


def sparse_info(path_or_name: str | os.PathLike, cluster_size: int | None = None) -> dict:
    """The sparse decoder of a model saved with its predictors (see
    :func:`pi2lab.predict.sparsify.load_sparse`) and the MB its sparse layout holds by part."""
    model, sparse = load_sparse(path_or_name, cluster_size=cluster_size)
    memory = sparse.memory(model.params)
    return {
        "sparse decoder": repr(sparse),
        **{f"sparse {k.removesuffix('_bytes')} MB": round(v / 1e6, 2) for k, v in memory.items()},
    }


def layout_info(layout: FlashLayout) -> dict:
    """A flash layout's format figures and sizes in bytes; ``ok`` since it opened (or
    verified)."""
    return {
        "path": str(layout.path),
        "dtype": layout.dtype,
        "cluster_size": layout.cluster_size,
        "unit_bytes": layout.unit_bytes,
        "stride": layout.stride,
        "bundle_files": len(layout.files),
        "ffn_bytes": layout.ffn_bytes,
        "resident_bytes": (layout.path / RESIDENT).stat().st_size,
        "has_plan": layout.plan is not None,
        "ok": True,
    }
