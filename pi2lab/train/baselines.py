"""Unigram and interpolated-bigram perplexities: the floor a trained model must beat."""

from __future__ import annotations

import numpy as np


def unigram_perplexity(train: np.ndarray, held_out: np.ndarray, vocab: int) -> float:
    """Add-one smoothed unigram model fit on ``train``, scored on ``held_out``."""
    counts = np.bincount(train, minlength=vocab) + 1.0
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[held_out].mean()))


def bigram_perplexity(train: np.ndarray, held_out: np.ndarray, vocab: int) -> tuple[float, float]:
    """Bigram interpolated with the unigram, ``lam * P(b|a) + (1 - lam) * P(b)``.

    ``lam`` is picked on the held-out text itself (a grid), which flatters the baseline.
    Returns the perplexity and the chosen ``lam``.
    """
    uni = np.bincount(train, minlength=vocab) + 1.0
    uni /= uni.sum()
    pair = train[:-1].astype(np.int64) * vocab + train[1:]
    keys, counts = np.unique(pair, return_counts=True)
    prev_totals = np.bincount(train[:-1], minlength=vocab).astype(np.float64)
    q = held_out[:-1].astype(np.int64) * vocab + held_out[1:]
    idx = np.clip(np.searchsorted(keys, q), 0, keys.size - 1)
    hits = np.where(keys[idx] == q, counts[idx], 0)
    totals = prev_totals[held_out[:-1]]
    p_bi = np.divide(hits, totals, out=np.zeros_like(totals), where=totals > 0)
    p_uni = uni[held_out[1:]]
    best = min(
        (float(np.exp(-np.log(lam * p_bi + (1 - lam) * p_uni).mean())), lam)
        for lam in np.linspace(0.0, 0.95, 20)
    )
    return best
