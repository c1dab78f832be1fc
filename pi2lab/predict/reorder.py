"""Hot-first neuron order: permute each layer's FFN neurons by firing frequency.

A neuron is row i of gate and up and row i of the neuron-major down, so permuting those rows
together leaves the layer's output unchanged while making the hot set a contiguous block.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from pi2lab.quant.ops import is_quantized, untransposed


def hot_first_order(counts: np.ndarray) -> np.ndarray:
    """Permutations that sort neurons by descending firing count (ties keep their index):
    ``counts [L, F]`` (``[L, E, F]``) -> ``perm`` of the same shape; new neuron j is old
    ``perm[..., j]``."""
    return np.argsort(-np.asarray(counts), axis=-1, kind="stable")


def permute_params(params: dict, perm: np.ndarray) -> dict:
    """Parameters with each layer's (each expert's) FFN neurons permuted by ``perm``."""
    new_layers = []
    for p, order in zip(params["layers"], perm, strict=True):
        order = jnp.asarray(order)
        p = {k: untransposed(w) if is_quantized(w) else w for k, w in p.items()}
        if order.ndim == 1:
            moved = {k: jax.tree.map(lambda a, o=order: a[o], p[k]) for k in ("gate", "up", "down")}
        else:  # [E, F]: a different order per expert
            moved = {
                k: jax.tree.map(
                    lambda a, o=order: jnp.take_along_axis(a, o[:, :, None], axis=1), p[k]
                )
                for k in ("gate", "up", "down")
            }
        new_layers.append({**p, **moved})
    return {**params, "layers": new_layers}


def reorder_model(model, counts: np.ndarray):
    """A copy of ``model`` in hot-first order, and the permutation applied."""
    perm = hot_first_order(counts)
    return dataclasses.replace(model, params=permute_params(model.params, perm)), perm
