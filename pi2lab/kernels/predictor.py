"""Predictor forward: which FFN neurons a low-rank MLP expects to fire for a token.

``scores = fc2 @ relu(fc1 @ rms(resid) + b1) + b2`` with ``fc1 [r, D]``, ``fc2 [F, r]``;
``resid`` is the residual stream entering the FFN block. The sparse and offload engines run it
every decode step; :mod:`pi2lab.predict.predictor` trains the weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def rms(x: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6)


def scores(pred: dict, resid: jax.Array) -> jax.Array:
    """Predictor logits ``[..., F]`` for residual stream vectors ``resid [..., D]``."""
    # einsum, not ``x @ w.T``: XLA:CPU runs a vector times a transposed matrix ~10x slower
    hidden = jax.nn.relu(jnp.einsum("rd,...d->...r", pred["fc1"], rms(resid)) + pred["b1"])
    return jnp.einsum("fr,...r->...f", pred["fc2"], hidden) + pred["b2"]
