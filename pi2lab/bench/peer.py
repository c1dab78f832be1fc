"""``pi2lab bench peer``: llama.cpp on the same weights as pi2lab, in the same run.

Each model is written once as an F32 GGUF (:func:`pi2lab.model.gguf.write_gguf`), quantized by
llama.cpp's own quantizer to F16, Q8_0 and Q4_0 (every matrix in that type, ``pure``: no Q6_K
LM head), and decoded greedily by llama.cpp (through llama-cpp-python, as many threads as this
process has cores) interleaved with pi2lab's dense decode and its sparse decode (native
kernel, one-neuron clusters, 10% of neurons firing in co-activated groups replayed as masks)
on the same weights: f32, and quantized by pi2lab to int8 and int4 (the Q8_0 and Q4_0 block
formats, :mod:`pi2lab.quant.format`). What the engines share: the weights and the shapes.
What they do not: llama.cpp's ``llama`` graph computes SiLU(gate)·up,
so rows on dReLU shapes are speed-only (said in the row), and pi2lab's sparse rows replay
masks rather than predict them (the predictor is timed in ``pi2lab bench sparse``).

Needs the ``peer`` extra (``pip install -e ".[peer]"``: llama-cpp-python, built from source,
and gguf); without it the bench raises :class:`~pi2lab.errors.MissingExtraError`.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.bench.common import decode_rate, dense_step, machine
from pi2lab.bench.dense import decode_weight_bytes
from pi2lab.bench.sparse import _interleaved, synthetic_config, synthetic_masks
from pi2lab.config import ModelConfig
from pi2lab.engine.sampling import SamplingKnobs
from pi2lab.engine.sparse import sparse_decode_step
from pi2lab.errors import MissingExtraError
from pi2lab.ffi import bundle_ffn, native_built
from pi2lab.kernels.sparse_ffn import sparse_layout
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.model.gguf import gguf_module, write_gguf
from pi2lab.model.params import init_params, quantize_params
from pi2lab.model.pretrained import load_config, resolve
from pi2lab.plan.measure import median_seconds, memory_gbs
from pi2lab.quant import format as qf
from pi2lab.quant import ops
from pi2lab.quant.format import KINDS

QUANTS = ("F16", "Q8_0", "Q4_0")


def llama_cpp_module():
    """``llama_cpp`` (and ``gguf``), or MissingExtraError saying how to install them."""
    gguf_module()
    try:
        import llama_cpp
    except ImportError as e:
        raise MissingExtraError(
            f"the peer extra is not installed ({e}); install it with: pip install -e '.[peer]' "
            "(builds llama.cpp from source, a few minutes)"
        ) from None
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # the quantizer's per-tensor log
    return llama_cpp


def threads() -> int:
    return len(os.sched_getaffinity(0))


def quantize(src: str | os.PathLike, dst: str | os.PathLike, kind: str) -> str:
    """llama.cpp's quantizer: ``src`` (F32 GGUF) -> ``dst`` in ``kind`` (F16, Q8_0, Q4_0)."""
    llama_cpp = llama_cpp_module()
    ftype = {"F16": "LLAMA_FTYPE_MOSTLY_F16", "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0"}
    ftype["Q4_0"] = "LLAMA_FTYPE_MOSTLY_Q4_0"
    qp = llama_cpp.llama_model_quantize_default_params()
    qp.ftype = getattr(llama_cpp, ftype[kind])
    qp.pure = True  # every matrix in `kind`, as pi2lab's int8/int4 models have them
    qp.nthread = threads()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), qp)
    if rc != 0:
        raise RuntimeError(f"llama.cpp failed to quantize {src} to {kind} (status {rc})")
    return str(dst)


def open_llama(path: str | os.PathLike, n_ctx: int = 256, logits_all: bool = False):
    """A llama.cpp model (llama-cpp-python ``Llama``) on ``threads()`` threads, with a float32
    KV cache like pi2lab's (llama.cpp's default is float16)."""
    llama_cpp = llama_cpp_module()
    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_threads=threads(),
        n_threads_batch=threads(),
        logits_all=logits_all,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
        verbose=False,
    )


def llama_logits(llm, tokens: np.ndarray) -> np.ndarray:
    """llama.cpp's logits ``[T, V]`` for ``tokens`` from position 0 (``logits_all`` model)."""
    llm.reset()
    llm.eval([int(t) for t in tokens])
    return np.array(llm.scores[: len(tokens)], np.float32)


def llama_rate(llm, steps: int, prompt_len: int = 16, vocab: int = 4096) -> float:
    """Greedy decode tokens/s of ``steps`` tokens after a ``prompt_len``-token prompt."""
    llm.reset()
    llm.eval([int(t) for t in np.arange(1, prompt_len + 1) % vocab])
    t0 = time.perf_counter()
    for _ in range(steps):
        llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
    return steps / (time.perf_counter() - t0)


def gguf_weight_bytes(path: str | os.PathLike, tied: bool) -> int:
    """Weight bytes one llama.cpp decode step reads from a GGUF file: every tensor but the
    token embedding (one row of it), which counts whole when it is also the LM head."""
    gguf = gguf_module()
    total = 0
    for t in gguf.GGUFReader(str(path)).tensors:
        if t.name != "token_embd.weight" or tied:
            total += int(t.n_bytes)
    return total


def _sparse_rate(params, cfg: ModelConfig, steps: int, seed: int = 0, weights: str | None = None):
    """pi2lab sparse decode (one-neuron clusters) on 10% co-activated masks, replayed; the
    sparse-layout params it reads (dense decode reads them too) and the bytes per token.
    ``weights`` quantizes the sparse layout (``"int8"``, ``"int4"``)."""
    neurons = synthetic_masks("coactivated", cfg.intermediate_size, 0.1, 1024 + steps, seed)
    freq = neurons[:1024].mean(0)
    plan = SparsePlan.from_frequency(
        np.broadcast_to(freq, (cfg.num_layers, freq.size)), cluster_size=1
    )
    params = sparse_layout(params, plan)
    if weights is not None:
        params = quantize_params(params, weights)
    hot = plan.layers[0].hot
    masks = [jnp.asarray(m[hot:]) for m in neurons[1024:]]
    key, knobs, thr = jax.random.key(0), SamplingKnobs.make(), jnp.float32(0)

    def step(i, cache, token, pos):
        preds = [{"clusters": masks[(i + layer) % steps]} for layer in range(cfg.num_layers)]
        token, _, cache, _ = sparse_decode_step(
            params, preds, thr, cfg, plan, cache, token, pos, key, knobs
        )
        return token, cache

    ffn = sum(  # the FFN's bytes (quantized: weights and scales)
        a.nbytes
        for p in params["layers"]
        for k, w in p.items()
        if k.startswith(("hot_", "cold_"))
        for a in jax.tree.leaves(w)
    )
    computed = (hot + np.mean([m[hot:].sum() for m in neurons[1024:]])) / cfg.intermediate_size
    sparse_bytes = decode_weight_bytes(params, cfg) - ffn * (1 - computed)
    return params, step, sparse_bytes


def bench_model(
    name: str, cfg: ModelConfig, steps: int, repeats: int, workdir: str, seed: int = 0
) -> dict:
    """One model: llama.cpp F32/F16/Q8_0/Q4_0 and pi2lab dense/sparse in f32, int8 and int4,
    interleaved."""
    params = init_params(cfg, jax.random.key(seed))
    speed_only = cfg.ffn_activation != "silu"
    f32 = write_gguf(params, cfg, os.path.join(workdir, f"{name}-F32.gguf"), speed_only=speed_only)
    files = {"F32": str(f32)}
    for kind in QUANTS:
        files[kind] = quantize(f32, os.path.join(workdir, f"{name}-{kind}.gguf"), kind)
    runs = {}
    for kind, path in files.items():
        llm = open_llama(path)
        runs[f"llama.cpp {kind}"] = (
            lambda llm=llm: llama_rate(llm, steps, vocab=cfg.vocab_size),
            gguf_weight_bytes(path, cfg.tie_word_embeddings),
        )
    for weights in (None, "int8", "int4"):
        tag = weights or "f32"
        sparse, sparse_step, sparse_bytes = _sparse_rate(params, cfg, steps, seed, weights)
        dense = quantize_params(params, weights) if weights else sparse  # f32: the same arrays
        runs[f"pi2lab dense {tag}"] = (
            lambda p=dense: decode_rate(dense_step(p, cfg), p, cfg, steps),
            decode_weight_bytes(dense, cfg),
        )
        runs[f"pi2lab sparse {tag} (10%)"] = (
            lambda p=sparse, step=sparse_step: decode_rate(step, p, cfg, steps),
            sparse_bytes,
        )
    rates = _interleaved({k: fn for k, (fn, _) in runs.items()}, repeats)
    engines = {}
    for k, (_, nbytes) in runs.items():
        tps = float(np.median(rates[k]))
        engines[k] = {
            "tokens_per_s": round(tps, 2),
            "runs": [round(x, 2) for x in rates[k]],
            "weight_mb_per_token": round(nbytes / 1e6, 1),
            "implied_gb_per_s": round(nbytes * tps / 1e9, 1),
        }
    return {
        "model": name,
        "shape": f"{cfg.num_layers} layers, hidden {cfg.hidden_size}, FFN "
        f"{cfg.intermediate_size}, {cfg.ffn_activation}",
        "note": (
            "speed-only: llama.cpp computes SiLU(gate)*up on these weights, pi2lab "
            f"{cfg.ffn_activation}"
            if speed_only
            else "same model in both engines (logits agree, tests/bench/test_peer.py)"
        ),
        "engines": engines,
        "ratios": _ratios(engines),
        "sparse_vs_dense": _sparse_vs_dense(engines),
    }


# (pi2lab engine, llama.cpp engine) pairs whose speed ratio each model's row reports
RATIOS = [
    ("pi2lab dense f32", "llama.cpp F32"),
    ("pi2lab dense int8", "llama.cpp Q8_0"),
    ("pi2lab dense int4", "llama.cpp Q4_0"),
    ("pi2lab sparse f32 (10%)", "llama.cpp F32"),
    ("pi2lab sparse int8 (10%)", "llama.cpp Q8_0"),
    ("pi2lab sparse int4 (10%)", "llama.cpp Q4_0"),
]


def _ratios(engines: dict) -> dict:
    rate = lambda k: engines[k]["tokens_per_s"]
    return {f"{a} / {b}": round(rate(a) / rate(b), 3) for a, b in RATIOS}


def _sparse_vs_dense(engines: dict) -> dict:
    """Each precision's sparse speed-up over pi2lab dense beside its bytes-touched bound (dense
    weight bytes per token over sparse), and the fraction of the bound reached."""
    out = {}
    for tag in ("f32", "int8", "int4"):
        dense, sparse = engines[f"pi2lab dense {tag}"], engines[f"pi2lab sparse {tag} (10%)"]
        speedup = sparse["tokens_per_s"] / dense["tokens_per_s"]
        bound = dense["weight_mb_per_token"] / sparse["weight_mb_per_token"]
        out[tag] = {
            "speedup": round(speedup, 3),
            "bytes_bound_speedup": round(bound, 3),
            "fraction_of_bound": round(speedup / bound, 3),
        }
    return out


def kernel_bandwidth(quick: bool = False, runs: int = 7) -> dict:
    """GB/s of weights each product streams on one ``[14336, 4096]`` matrix (quick: 2048
    rows), beside this machine's memory bandwidth (a one-thread NumPy sum): XLA's f32
    matrix-vector product, and the native int8/int4 kernels in both forms."""
    rows, d = (2048 if quick else 14336), 4096
    rng = np.random.default_rng(0)
    w = rng.standard_normal((rows, d), dtype=np.float32) * 0.02
    x, a = jnp.asarray(rng.standard_normal(d, dtype=np.float32)), jnp.asarray(w[:, 0] * 50)
    f32 = jnp.asarray(w)
    products = {"f32 dot (XLA)": (jax.jit(lambda x, w: jnp.einsum("fd,d->f", w, x)), x, f32)}
    for kind in KINDS:
        q = ops.quantize(w, kind)
        products[f"{kind} dot"] = (jax.jit(ops.qdot), x, q)
        products[f"{kind} axpy"] = (jax.jit(ops.qaxpy), a, q)
    out = {
        "matrix": f"[{rows}, {d}]",
        "memory_gbs (numpy sum, 1 thread)": memory_gbs(rows * d * 4, runs),
    }
    for name, (fn, v, m) in products.items():
        fn(v, m).block_until_ready()
        seconds = median_seconds(lambda fn=fn, v=v, m=m: fn(v, m).block_until_ready(), runs)
        nbytes = m.nbytes
        out[name] = {"ms": round(seconds * 1e3, 2), "gb_per_s": round(nbytes / seconds / 1e9, 1)}
    if native_built():
        out |= _bundle_bandwidth(w, x, runs)
    return out


def _bundle_bandwidth(w: np.ndarray, x, runs: int) -> dict:
    """The offload engine's host FFN on 10% of one-neuron int4/int8 bundles (gate, up and down
    rows of ``w``'s shape) lying in 4 KiB-aligned slots: the native kernel reading them in
    place, against dequantizing them with NumPy first (the path without the kernels)."""
    rng = np.random.default_rng(1)
    f = w.shape[0]
    x = np.asarray(x)
    rows = np.sort(rng.choice(f, f // 10, replace=False))
    out = {}
    for kind in KINDS:
        q, scales = qf.quantize(np.stack([w, w[::-1], w], axis=1), kind)  # [F, 3, D']
        stride = -(-q[0].nbytes // 4096) * 4096
        src = np.zeros((f, stride), np.uint8)
        src[:, : q[0].nbytes] = q.reshape(f, -1).view(np.uint8)

        def native(kind=kind, src=src, scales=scales):
            bundle_ffn(x, src, rows, rows, scales, 1, qf.BITS[kind], "drelu", 0.0)

        def numpy_path(kind=kind, src=src, scales=scales, q=q):
            raw = src[rows, : q[0].nbytes].view(q.dtype).reshape(rows.size, 3, -1)
            g, u, dn = np.moveaxis(qf.dequantize(raw, scales[rows], kind), 1, 0)
            h = np.maximum(g @ x, 0) * np.maximum(u @ x, 0)
            return h @ dn

        read = rows.size * q[0].nbytes
        for name, fn in (
            (f"{kind} bundles, in place", native),
            (f"{kind} bundles, NumPy", numpy_path),
        ):
            fn()
            seconds = median_seconds(fn, runs)
            out[name] = {"ms": round(seconds * 1e3, 2), "gb_per_s": round(read / seconds / 1e9, 1)}
    return out


def bench_peer(*, quick: bool = False, steps: int | None = None, layers: int | None = None) -> dict:
    """llama.cpp against pi2lab on the synthetic 7B-shaped models (4096/11008 SiLU, 4096/14336
    dReLU) and the bundled model's shape, side by side."""
    llama_cpp_module()
    steps = steps or (8 if quick else 32)
    repeats = 2 if quick else 3
    layers = layers or (1 if quick else 4)
    bundled = load_config(resolve("builtin"))
    models = {
        "llama-7b-shape": synthetic_config(
            layers, 4096, 11008, architecture="llama", ffn_activation="silu"
        ),
        "bamboo-7b-shape": synthetic_config(layers, 4096, 14336),
        "bundled-shape": bundled,
    }
    out = {"bench": "peer", "machine": machine(), "threads": threads()}
    out["kernels"] = kernel_bandwidth(quick)
    for name, cfg in models.items():
        with tempfile.TemporaryDirectory(prefix="pi2lab-peer-") as workdir:
            out[name.replace("-", "_")] = bench_model(name, cfg, steps, repeats, workdir)
    return out
