"""Writing a flash layout: a model's parameters (or a saved checkpoint) -> the directory that
:mod:`pi2lab.storage.layout` describes and reads.

Offline tooling, like profiling and predictor training: it loads checkpoints and sparsified
models, so it sits above the engines, while reading a layout needs neither JAX nor the sparse
engine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from pathlib import Path

import numpy as np
import safetensors.numpy

from pi2lab.config import ModelConfig
from pi2lab.errors import ConfigError
from pi2lab.fileio import atomic_dir
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.model.params import merge_ffn
from pi2lab.model.pretrained import load_pretrained, resolve
from pi2lab.predict.predictor import PREDICTORS_FILE
from pi2lab.predict.sparsify import load_sparse
from pi2lab.quant import format as qf
from pi2lab.storage.layout import (
    BITS,
    FFN_KEYS,
    FORMAT,
    HEADER,
    RESIDENT,
    BundleFile,
    StorageDtype,
    bundle_bytes,
    default_cluster_size,
    quantize,
    round_up,
)


def _resident_tensors(cfg: ModelConfig, params: dict) -> dict[str, np.ndarray]:
    out = {}
    for k, v in params.items():
        if k != "layers":
            out[k] = np.asarray(v, np.float32)
    for i, layer in enumerate(params["layers"]):
        for k, v in layer.items():
            if k not in FFN_KEYS:
                out[f"layers.{i}.{k}"] = np.asarray(v, np.float32)
    return out


def _ffns(cfg: ModelConfig, layer: dict):
    """(expert, gate, up, down) per FFN of one layer, numpy ``[F, D]``."""
    if not cfg.is_moe:
        yield None, *(np.asarray(layer[k]) for k in FFN_KEYS)
        return
    for e in range(cfg.num_experts):
        yield e, *(np.asarray(layer[k][e]) for k in FFN_KEYS)


def convert(
    cfg: ModelConfig,
    params: dict,
    out: str | os.PathLike,
    *,
    dtype: StorageDtype = "f32",
    cluster_size: int | None = None,
    predictors: list[dict] | None = None,
    plan: SparsePlan | None = None,
    tokenizer=None,
) -> Path:
    """Writes the flash layout of a hot-first model (``params``: internal tree) to ``out``.

    Everything is written into a temporary directory beside ``out`` and renamed at the end, so
    an interrupted convert leaves nothing that opens as a layout.

    Raises:
      ConfigError: unknown dtype, a cluster size not dividing the FFN, a quantized dtype with
        a hidden size that is not a multiple of 32.
    """
    if dtype not in BITS:
        raise ConfigError(f"storage dtype {dtype!r}: expected one of {sorted(BITS)}")
    params = merge_ffn(params)
    f, d = cfg.intermediate_size, cfg.hidden_size
    c = cluster_size or default_cluster_size(f, d, dtype)
    if c <= 0 or f % c:
        raise ConfigError(f"cluster size {c}: expected a positive divisor of the FFN size {f}")
    quantized = dtype in ("int8", "int4")
    if quantized:
        qf.check_tiles((d,), f"{dtype} bundles of hidden size {d}")
    out = Path(out)
    with atomic_dir(out) as tmp:
        stride = round_up(c * bundle_bytes(d, dtype))
        (tmp / "ffn").mkdir()
        tensors = _resident_tensors(cfg, params)
        files = []
        for i, layer in enumerate(params["layers"]):
            for e, gate, up, down in _ffns(cfg, layer):
                index = len(files)
                w = np.stack([gate, up, down], axis=1)  # [F, 3, D]
                q, scales = quantize(w, dtype)
                if scales is not None:
                    tensors[f"scales.{index}"] = scales
                payload = q.view(np.uint8).reshape(f // c, -1)
                units = np.zeros((f // c, stride), np.uint8)
                units[:, : payload.shape[1]] = payload
                tensors[f"crc32.{index}"] = np.array([zlib.crc32(u) for u in units], np.uint32)
                name = f"ffn/layer_{i:03d}" + ("" if e is None else f"_e{e}") + ".bin"
                units.tofile(tmp / name)
                files.append(
                    BundleFile(
                        layer=i, expert=e, file=name, nbytes=units.nbytes, crc32=zlib.crc32(units)
                    )
                )
                del w, q, units
        for i, pred in enumerate(predictors or []):
            for k, v in pred.items():
                tensors[f"predictors.{i}.{k}"] = np.asarray(v, np.float32)
        safetensors.numpy.save_file(tensors, str(tmp / RESIDENT))
        header = {
            "format": FORMAT,
            "config": cfg.to_hf(),
            "dtype": dtype,
            "group_size": qf.BLOCK if quantized else 0,
            "cluster_size": c,
            "stride": stride,
            "files": [dataclasses.asdict(bf) for bf in files],
            "plan": None if plan is None else plan.to_json(),
        }
        (tmp / HEADER).write_text(json.dumps(header, indent=1) + "\n")
        if tokenizer is not None:
            tokenizer.save(str(tmp / "tokenizer.json"))
    return out


def convert_pretrained(name: str | os.PathLike, out: str | os.PathLike, **kwargs) -> Path:
    """Converts a saved model (its predictors and plan too, when it has them: see
    :meth:`pi2lab.predict.sparsify.Sparsified.save`). ``kwargs`` as for :func:`convert`."""
    if (resolve(name) / PREDICTORS_FILE).is_file():
        model, sparse = load_sparse(name)
        predictors, plan = sparse.predictors, sparse.plan
    else:
        model, predictors, plan = load_pretrained(name), None, None
    params = {k: v for k, v in model.params.items()}
    return convert(
        model.config,
        params,
        out,
        predictors=predictors,
        plan=plan,
        tokenizer=model.tokenizer,
        **kwargs,
    )
