"""Activation statistics of a model over text."""

from __future__ import annotations

import numpy as np

from pi2lab.engine.prefill import ffn_activations


def activation_sparsity(model, tokens) -> np.ndarray:
    """Per-layer FFN sparsity ``[L]``: the mean fraction of neurons whose activation is exactly
    zero, per token (for MoE, over the experts each token was routed to)."""
    out = []
    for act in ffn_activations(model, tokens):
        act = np.asarray(act)
        if act.ndim == 3:  # [T, E, F]: only routed experts count
            routed = np.any(act != 0, axis=-1)  # [T, E]
            fired = (act != 0).sum(-1)[routed]
            out.append(1.0 - fired.mean() / act.shape[-1])
        else:
            out.append(float(np.mean(act == 0)))
    return np.asarray(out)
