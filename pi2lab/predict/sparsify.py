"""From a dense model to a sparse-decode-ready one: profile, hot-first reorder, plan, predictors.

One dense pass over the text collects (residual, active mask) pairs; the firing counts give
the hot-first order; the masks are permuted to that order and the predictors trained on them,
so predictors, plan and weights all speak hot-first neuron indices.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Literal

import numpy as np

from pi2lab.engine.sparse import SparseDecoder
from pi2lab.errors import ConfigError
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.model.params import quantize_params
from pi2lab.model.pretrained import load_pretrained, resolve, save_pretrained
from pi2lab.predict.placement import coactivation_orders
from pi2lab.predict.predictor import (
    PREDICTORS_FILE,
    PredictorConfig,
    Predictors,
    collect,
    fit_predictors,
)
from pi2lab.predict.reorder import hot_first_order, permute_params
from pi2lab.quant.format import check_kind

Placement = Literal["frequency", "coactivation"]


@dataclasses.dataclass(frozen=True, eq=False)
class Sparsified:
    """A hot-first model with its sparse plan and trained predictors.

    Attributes:
      model: The model with neurons permuted hot-first (outputs unchanged).
      predictors: Trained predictors in hot-first order.
      plan: Hot block and clusters per layer.
      frequency: Firing frequency per neuron ``[L, F]`` (``[L, E, F]``), in the model's order.
      placement: How cold neurons are ordered: by frequency, or grouped by co-activation.
    """

    model: object
    predictors: Predictors
    plan: SparsePlan
    frequency: np.ndarray
    placement: Placement = "frequency"

    def decoder(self, threshold: float = 0.0) -> SparseDecoder:
        return SparseDecoder(plan=self.plan, predictors=self.predictors.layers, threshold=threshold)

    def save(self, out: str | os.PathLike) -> Path:
        """Writes the hot-first model and ``predictors.safetensors`` (with the plan) to ``out``."""
        out = save_pretrained(self.model, out)
        report = {
            **self.predictors.report,
            "plan": self.plan.to_json(),
            "placement": self.placement,
        }
        dataclasses.replace(self.predictors, report=report).save(out)
        return out


def sparsify(
    model,
    tokens: np.ndarray,
    *,
    pc: PredictorConfig | None = None,
    cluster_size: int = 16,
    hot_min_frequency: float = 0.3,
    placement: Placement = "frequency",
) -> Sparsified:
    """Profiles ``model`` on ``tokens``, reorders it hot-first, plans and trains predictors.

    ``placement="coactivation"`` then regroups each layer's cold neurons so that neurons that
    fired together on ``tokens`` share clusters (:mod:`pi2lab.predict.placement`)."""
    if placement not in ("frequency", "coactivation"):
        raise ConfigError(f"placement={placement!r}: expected 'frequency' or 'coactivation'")
    if cluster_size < 1:  # before the dense pass, not after it
        raise ConfigError(f"cluster_size={cluster_size}: expected a positive integer")
    pc = pc or PredictorConfig()
    inputs, masks = collect(model, np.asarray(tokens, np.int32))
    counts = np.stack([m.sum(0) for m in masks])  # [L, F] or [L, E, F]
    perm = hot_first_order(counts)
    masks = [np.take_along_axis(m, p[None], axis=-1) for m, p in zip(masks, perm, strict=True)]
    if model.config.is_moe:
        seen = np.stack([m.any(-1).sum(0) for m in masks])[..., None]  # routed tokens [L, E, 1]
    else:
        seen = len(inputs[0])
    frequency = np.take_along_axis(counts, perm, axis=-1) / np.maximum(seen, 1)
    plan = SparsePlan.from_frequency(
        frequency, cluster_size=cluster_size, hot_min_frequency=hot_min_frequency
    )
    if placement == "coactivation":
        co = coactivation_orders(masks, plan)
        masks = [np.take_along_axis(m, c[None], axis=-1) for m, c in zip(masks, co, strict=True)]
        frequency = np.take_along_axis(frequency, co, axis=-1)
        perm = np.take_along_axis(perm, co, axis=-1)
    reordered = dataclasses.replace(model, params=permute_params(model.params, perm))
    predictors = fit_predictors(model.config, inputs, masks, pc)
    return Sparsified(
        model=reordered,
        predictors=predictors,
        plan=plan,
        frequency=frequency,
        placement=placement,
    )


def load_sparse(
    path_or_name,
    *,
    threshold: float = 0.0,
    cluster_size: int | None = None,
    weights: str | None = None,
):
    """A model saved by :meth:`Sparsified.save`, its FFN in the sparse layout, and its
    :class:`SparseDecoder`. ``cluster_size`` replaces the saved plan's (the predictors are
    per neuron, so any size works; 1 computes exactly the predicted neurons). ``weights``
    (``"int8"``, ``"int4"``) quantizes the sparse layout at load."""
    if weights is not None:
        check_kind(weights)
    path = resolve(path_or_name)
    model = load_pretrained(path)
    predictors = Predictors.load(path, model.config)
    plan = SparsePlan.from_json(predictors.report["plan"])
    plan.check(model.config)
    if cluster_size is not None:
        if cluster_size < 1:
            raise ConfigError(f"cluster_size={cluster_size}: expected a positive integer")
        plan = plan.with_cluster_size(cluster_size, model.config.intermediate_size)
    decoder = SparseDecoder(plan=plan, predictors=predictors.layers, threshold=threshold)
    # the FFN in the sparse layout once, replacing the whole matrices (dense reads it too)
    return _in_layout(model, decoder, weights), decoder


def _in_layout(model, decoder: SparseDecoder, weights: str | None):
    """``model`` with its FFN in ``decoder``'s layout, then quantized to ``weights`` (the
    sparse layout keeps a down projection one neuron per row)."""
    params = decoder.layout(model.params)
    if weights is not None:
        params = quantize_params(params, weights)
    return dataclasses.replace(model, params=params)


def load_for_engine(
    path_or_name,
    engine: Literal["dense", "sparse"],
    *,
    threshold: float = 0.0,
    cluster_size: int | None = None,
    weights: str | None = None,
):
    """The model, and for the sparse engine its :class:`SparseDecoder`: the trained predictors
    when the model directory has them (see :func:`load_sparse`), else the oracle (exact, no
    speed-up; its ``predictors`` is None and ``cluster_size`` is not used). For ``dense`` the
    decoder is None. ``weights`` quantizes at load (``"int8"``, ``"int4"``)."""
    if engine not in ("dense", "sparse"):
        raise ConfigError(f"engine={engine!r}: expected 'dense' or 'sparse'")
    if engine == "dense":
        return load_pretrained(path_or_name, weights=weights), None
    if (resolve(path_or_name) / PREDICTORS_FILE).is_file():
        return load_sparse(
            path_or_name, threshold=threshold, cluster_size=cluster_size, weights=weights
        )
    model = load_pretrained(path_or_name)
    decoder = SparseDecoder.oracle(model.config)
    return _in_layout(model, decoder, weights), decoder


def report_table(predictors: Predictors, plan: SparsePlan) -> str:
    rows = ["layer  rank  hot  recall  precision  predicted  true"]
    for row, lp in zip(predictors.report["layers"], plan.layers, strict=True):
        rows.append(
            f"{row['layer']:>5}  {row['rank']:>4}  {lp.hot:>3}  {row['recall']:.3f}   "
            f"{row['precision']:.3f}      {row['predicted_active']:.3f}      "
            f"{row['true_active']:.3f}"
        )
    return "\n".join(rows) + "\n" + json.dumps({"plan": plan.to_json()[0]})


def sparse_summary(path_or_name: str | os.PathLike, cluster_size: int | None = None) -> dict:
    """The sparse decoder of a model saved with its predictors (see :func:`load_sparse`) and
    the MB its sparse layout holds by part."""
    model, sparse = load_sparse(path_or_name, cluster_size=cluster_size)
    memory = sparse.memory(model.params)
    return {
        "sparse decoder": repr(sparse),
        **{f"sparse {k.removesuffix('_bytes')} MB": round(v / 1e6, 2) for k, v in memory.items()},
    }
