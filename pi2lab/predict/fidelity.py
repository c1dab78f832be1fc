"""Fidelity of sparse decode against dense, and of quantized weights against float ones:
perplexity and greedy-token agreement.

Both are teacher-forced over held-out text: each sequence is prefilled with its first token,
then fed one token at a time through the sparse decode step; the dense reference is the dense
forward over the same tokens (equal to dense decode within float error).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.engine.prefill import bucket, dense_logits, pad, prefill
from pi2lab.engine.sampling import SamplingKnobs
from pi2lab.engine.sparse import SparseDecoder, sparse_decode_step
from pi2lab.errors import ConfigError
from pi2lab.model.kv_cache import KVCache


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    logits = logits - logits.max(-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return -logp[np.arange(targets.size), targets]


def sparse_logits(model, sparse: SparseDecoder, tokens: np.ndarray):
    """Teacher-forced sparse decode of ``tokens [T]``: logits ``[T-1, V]`` for positions
    ``1..T-1`` and the active cold clusters per step and layer ``[T-1, L]``."""
    cfg = model.config
    params = sparse.layout(model.params)
    cache = KVCache.zeros(cfg, bucket(tokens.size, 128), dtype=model.dtype)
    _, cache = prefill(params, cfg, pad(tokens[:1], bucket(1)), jnp.int32(1), cache)
    knobs, key, thr = SamplingKnobs.make(), jax.random.key(0), jnp.float32(sparse.threshold)
    out, counts = [], []
    for pos in range(tokens.size - 1):
        _, logits, cache, c = sparse_decode_step(
            params,
            sparse.predictors,
            thr,
            cfg,
            sparse.plan,
            cache,
            jnp.int32(tokens[pos]),
            jnp.int32(pos),
            key,
            knobs,
            sparse.impl,
        )
        out.append(logits)
        counts.append(c)
    return np.asarray(jnp.stack(out)), np.asarray(jnp.stack(counts))


def fidelity(
    model, sparse: SparseDecoder, sequences: list[np.ndarray], thresholds: list[float]
) -> list[dict]:
    """Per threshold: dense and sparse perplexity, their ratio, greedy agreement (share of
    positions where both argmaxes agree), and the share of cold clusters computed.

    Raises:
      ConfigError: no sequences or no thresholds, or a sequence shorter than 2 tokens.
    """
    if not sequences or not thresholds:
        raise ConfigError(
            f"{len(sequences)} sequences and {len(thresholds)} thresholds: expected at least "
            "one of each"
        )
    if short := [i for i, seq in enumerate(sequences) if np.size(seq) < 2]:
        raise ConfigError(f"sequences {short} are shorter than 2 tokens: nothing to score")
    dense = [np.asarray(dense_logits(model, seq))[:-1] for seq in sequences]
    dense_nll = np.concatenate([_nll(d, s[1:]) for d, s in zip(dense, sequences, strict=True)])
    n_clusters = np.array(
        [lp.num_clusters(model.config.intermediate_size) for lp in sparse.plan.layers]
    )
    experts = max(model.config.num_experts_per_tok, 1)
    rows = []
    for t in thresholds:
        dec = dataclasses.replace(sparse, threshold=t)
        nll, agree, density = [], [], []
        for seq, d in zip(sequences, dense, strict=True):
            logits, counts = sparse_logits(model, dec, seq)
            nll.append(_nll(logits, seq[1:]))
            agree.append(logits.argmax(-1) == d.argmax(-1))
            density.append(counts / np.maximum(n_clusters * experts, 1))
        ppl_dense = float(np.exp(dense_nll.mean()))
        ppl = float(np.exp(np.concatenate(nll).mean()))
        rows.append(
            {
                "threshold": t,
                "perplexity_dense": ppl_dense,
                "perplexity_sparse": ppl,
                "perplexity_increase": ppl / ppl_dense - 1,
                "greedy_agreement": float(np.concatenate(agree).mean()),
                "cold_clusters_computed": float(np.concatenate(density).mean()),
            }
        )
    return rows


def quantization_fidelity(model, quantized: dict, sequences: list[np.ndarray]) -> dict:
    """Per quantized copy of ``model`` (``{"int8": model_int8, ...}``): teacher-forced dense
    perplexity against the float model's, and greedy agreement.

    Raises:
      ConfigError: no sequences, or one shorter than 2 tokens.
    """
    if not sequences or any(np.size(s) < 2 for s in sequences):
        raise ConfigError("expected at least one sequence of 2 tokens or more")

    def scores(m):
        logits = [np.asarray(dense_logits(m, seq))[:-1] for seq in sequences]
        nll = np.concatenate([_nll(lg, s[1:]) for lg, s in zip(logits, sequences, strict=True)])
        return float(np.exp(nll.mean())), np.concatenate([lg.argmax(-1) for lg in logits])

    ppl, greedy = scores(model)
    out = {"perplexity_float": ppl, "tokens": int(sum(np.size(s) - 1 for s in sequences))}
    for name, m in quantized.items():
        q_ppl, q_greedy = scores(m)
        out[name] = {
            "perplexity": q_ppl,
            "perplexity_increase": q_ppl / ppl - 1,
            "greedy_agreement": float(np.mean(q_greedy == greedy)),
        }
    return out


def format_fidelity(rows: list[dict]) -> str:
    """:func:`fidelity`'s rows as a text table, one line per threshold."""
    lines = ["threshold  ppl dense  ppl sparse  increase  greedy agreement  clusters computed"]
    for r in rows:
        lines.append(
            f"{r['threshold']:>9.2f}  {r['perplexity_dense']:>9.2f}  "
            f"{r['perplexity_sparse']:>10.2f}  {r['perplexity_increase']:>+8.2%}  "
            f"{r['greedy_agreement']:>16.3f}  {r['cold_clusters_computed']:>17.3f}"
        )
    return "\n".join(lines)
