"""Activation predictors: one low-rank MLP per layer (per expert for MoE), trained here.

Shape (PowerInfer-1 lineage): ``scores = fc2 @ relu(fc1 @ rms(resid) + b1) + b2`` with
``fc1 [r, D]``, ``fc2 [F, r]``, where ``resid`` is the residual stream entering the FFN block
(before its RMSNorm; the predictor normalises it without a learned scale). A neuron is
predicted active when its score exceeds the threshold (a traced knob; 0 = probability 0.5).

Rank per layer is chosen from the data: the smallest r whose top-r singular values hold
``energy`` of the centred active-mask matrix's squared norm, clamped to ``[min_rank,
max_rank]`` — layers whose firing patterns are higher-dimensional get more.

Training minimises binary cross-entropy with positives weighted by ``positive_weight``
(default ``sqrt((1 - p) / p)`` for base rate p: recall matters more than precision, since a
missed neuron changes the output and an extra one only costs time).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import safetensors.numpy
from tqdm.auto import tqdm

from pi2lab.engine.prefill import bucket, check_tokens, pad
from pi2lab.errors import CheckpointError, ConfigError
from pi2lab.fileio import atomic_file
from pi2lab.kernels.predictor import scores
from pi2lab.model.transformer import dense_ffn, forward

PREDICTORS_FILE = "predictors.safetensors"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PredictorConfig:
    """How predictors are sized and trained.

    Attributes:
      energy: Share of the mask matrix's squared norm the chosen rank must capture.
      min_rank: Smallest rank per layer.
      max_rank: Largest rank per layer.
      steps: Optimiser steps per layer (per expert).
      batch_size: Samples per step.
      learning_rate: Adam learning rate (cosine-decayed).
      positive_weight: BCE weight of active neurons; None = sqrt((1 - p) / p).
      held_out_fraction: Share of samples kept for calibration and the reported metrics.
      target_recall: If set, each predictor's output bias is shifted after training so that
        at threshold 0 it recalls this share of the held-out active neurons (a missed
        neuron changes the output; an extra one only costs time).
      seed: Initialisation and sampling seed.
    """

    energy: float = 0.9
    min_rank: int = 16
    max_rank: int = 256
    steps: int = 1500
    batch_size: int = 512
    learning_rate: float = 3e-3
    positive_weight: float | None = None
    held_out_fraction: float = 0.1
    target_recall: float | None = 0.99
    seed: int = 0

    def __post_init__(self):
        # written so that NaN fails every check
        if not 0 < self.energy <= 1:
            raise ConfigError(f"energy={self.energy}: expected 0 < energy <= 1")
        if not 1 <= self.min_rank <= self.max_rank:
            raise ConfigError(
                f"min_rank={self.min_rank}, max_rank={self.max_rank}: expected "
                "1 <= min_rank <= max_rank"
            )
        for name, value in {"steps": self.steps, "batch_size": self.batch_size}.items():
            if not value >= 1:
                raise ConfigError(f"{name}={value}: expected an integer >= 1")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning_rate={self.learning_rate}: expected a finite number > 0")
        if self.positive_weight is not None and not self.positive_weight > 0:
            raise ConfigError(f"positive_weight={self.positive_weight}: expected None or > 0")
        if not 0 < self.held_out_fraction < 1:
            raise ConfigError(
                f"held_out_fraction={self.held_out_fraction}: expected 0 < held_out_fraction < 1"
            )
        if self.target_recall is not None and not 0 < self.target_recall <= 1:
            raise ConfigError(
                f"target_recall={self.target_recall}: expected None or 0 < target_recall <= 1"
            )


# --- data ---------------------------------------------------------------------------------


def collect(model, tokens: np.ndarray, *, chunk: int = 256):
    """Runs the dense model over ``tokens`` in chunks and returns, per layer, the FFN block's
    input residual ``[N, D]`` and active mask ``[N, F]`` (MoE: ``[N, E, F]``)."""
    cfg = model.config
    chunk = min(chunk, cfg.max_position_embeddings)
    inputs = [[] for _ in range(cfg.num_layers)]
    masks = [[] for _ in range(cfg.num_layers)]
    for s in tqdm(range(0, tokens.size, chunk), desc="collect", unit="chunk", leave=False):
        part = check_tokens(tokens[s : s + chunk], cfg)
        res, act = _collect_chunk(model.params, cfg, pad(part, bucket(part.size)))
        for i in range(cfg.num_layers):
            inputs[i].append(np.asarray(res[i][0, : part.size]))
            masks[i].append(np.asarray(act[i][0, : part.size]) != 0)
    return [np.concatenate(x) for x in inputs], [np.concatenate(m) for m in masks]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _collect_chunk(params, cfg, tokens):
    dense = dense_ffn(cfg)

    def hook(i, resid, h, p):
        out, act = dense(i, resid, h, p)
        return out, (resid, act)

    _, _, pairs = forward(params, cfg, tokens, ffn=hook)
    return [r for r, _ in pairs], [a for _, a in pairs]


def choose_rank(mask: np.ndarray, pc: PredictorConfig) -> int:
    """Smallest rank whose singular values capture ``pc.energy`` of the centred mask matrix."""
    m = mask.reshape(-1, mask.shape[-1]).astype(np.float32)
    m = m[:: max(1, m.shape[0] // 8192)]  # a subsample keeps the SVD cheap
    s = np.linalg.svd(m - m.mean(0), compute_uv=False)
    energy = np.cumsum(s**2) / max(float(np.sum(s**2)), 1e-12)
    rank = int(np.searchsorted(energy, pc.energy) + 1)
    return int(np.clip(rank, pc.min_rank, min(pc.max_rank, mask.shape[-1])))


# --- training -----------------------------------------------------------------------------


def _init(key, d: int, f: int, rank: int, base_rate: np.ndarray) -> dict:
    k1, k2 = jax.random.split(key)
    p = np.clip(base_rate, 1e-4, 1 - 1e-4)
    return {
        "fc1": jax.random.normal(k1, (rank, d)) / math.sqrt(d),
        "b1": jnp.zeros(rank),
        "fc2": jax.random.normal(k2, (f, rank)) * 0.1 / math.sqrt(rank),
        "b2": jnp.asarray(np.log(p / (1 - p)), jnp.float32),
    }


def _loss(pred, x, y, pos_weight):
    logits = scores(pred, x)
    bce = optax.sigmoid_binary_cross_entropy(logits, y)
    return jnp.mean(bce * jnp.where(y > 0, pos_weight, 1.0))


@functools.partial(jax.jit, static_argnames=("optimizer",), donate_argnums=(0, 1))
def _step(pred, opt_state, x, y, pos_weight, optimizer):
    loss, grads = jax.value_and_grad(_loss)(pred, x, y, pos_weight)
    updates, opt_state = optimizer.update(grads, opt_state, pred)
    return optax.apply_updates(pred, updates), opt_state, loss


@jax.jit
def _confusion(pred, x, y, threshold):
    guess = scores(pred, x) > threshold
    y = y > 0
    return jnp.stack(
        [jnp.sum(guess & y), jnp.sum(guess & ~y), jnp.sum(~guess & y), jnp.float32(y.size)]
    )


def calibrate(pred: dict, x: np.ndarray, y: np.ndarray, target_recall: float) -> dict:
    """Shifts ``b2`` so that threshold 0 recalls ``target_recall`` of the active neurons in
    ``(x, y)``: the cut is that quantile of the scores of the true positives."""
    s = np.asarray(scores(pred, jnp.asarray(x)))
    positives = s[np.asarray(y, bool)]
    if positives.size == 0:
        return pred
    cut = float(np.quantile(positives, 1.0 - target_recall))
    return {**pred, "b2": pred["b2"] - cut}


def metrics(pred: dict, x: np.ndarray, y: np.ndarray, threshold: float = 0.0) -> dict:
    """Recall, precision and predicted-active fraction of one predictor at ``threshold``."""
    tp, fp, fn, total = (
        float(v) for v in _confusion(pred, jnp.asarray(x), jnp.asarray(y), jnp.float32(threshold))
    )
    return {
        "recall": tp / max(tp + fn, 1),
        "precision": tp / max(tp + fp, 1),
        "predicted_active": (tp + fp) / total,
        "true_active": (tp + fn) / total,
    }


def train_one(x: np.ndarray, y: np.ndarray, rank: int, pc: PredictorConfig, key) -> dict:
    """Trains one predictor on ``x [N, D]`` -> ``y [N, F]`` (bool)."""
    base = y.mean(0)
    pos_weight = pc.positive_weight or math.sqrt(
        (1 - max(base.mean(), 1e-4)) / max(base.mean(), 1e-4)
    )
    pred = _init(key, x.shape[1], y.shape[1], rank, base)
    optimizer = optax.adam(optax.cosine_decay_schedule(pc.learning_rate, pc.steps))
    opt_state = optimizer.init(pred)
    rng = np.random.default_rng(pc.seed)
    for _ in range(pc.steps):
        idx = rng.integers(0, x.shape[0], pc.batch_size)
        pred, opt_state, _ = _step(
            pred,
            opt_state,
            jnp.asarray(x[idx]),
            jnp.asarray(y[idx], jnp.float32),
            jnp.float32(pos_weight),
            optimizer,
        )
    return pred


@dataclasses.dataclass(frozen=True, eq=False)
class Predictors:
    """Per-layer predictor parameters (MoE: leaves stacked over experts ``[E, ...]``).

    Attributes:
      layers: One dict (fc1, b1, fc2, b2) per layer.
      ranks: Rank per layer.
      report: Per-layer held-out metrics at threshold 0 (and training settings).
    """

    layers: list[dict]
    ranks: tuple[int, ...]
    report: dict = dataclasses.field(default_factory=dict)

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        tensors = {
            f"layers.{i}.{k}": np.asarray(v, np.float32)
            for i, layer in enumerate(self.layers)
            for k, v in layer.items()
        }
        metadata = {
            "format": "pi2lab-predictors-1",
            "ranks": json.dumps(list(self.ranks)),
            "report": json.dumps(self.report),
        }
        with atomic_file(directory / PREDICTORS_FILE) as tmp:
            safetensors.numpy.save_file(tensors, str(tmp), metadata=metadata)
        return directory / PREDICTORS_FILE

    @classmethod
    def load(cls, directory: str | os.PathLike, cfg) -> Predictors:
        file = Path(directory) / PREDICTORS_FILE
        if not file.is_file():
            raise CheckpointError(
                f"{file}: no predictors; train them with `pi2lab train-predictors`"
            )
        try:
            with safetensors.safe_open(str(file), framework="numpy") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        except Exception as e:
            raise CheckpointError(f"{file}: not a readable safetensors file ({e})") from e
        if meta.get("format") != "pi2lab-predictors-1":
            raise CheckpointError(
                f"{file}: format {meta.get('format')!r}; expected 'pi2lab-predictors-1'"
            )
        ranks = tuple(json.loads(meta["ranks"]))
        layers = []
        for i in range(cfg.num_layers):
            layer = {}
            for k in ("fc1", "b1", "fc2", "b2"):
                name = f"layers.{i}.{k}"
                if name not in tensors:
                    raise CheckpointError(f"{file}: tensor {name!r} is missing")
                layer[k] = jnp.asarray(tensors[name])
            f_dim = layer["fc2"].shape[-2]
            if layer["fc1"].shape[-1] != cfg.hidden_size or f_dim != cfg.intermediate_size:
                raise CheckpointError(
                    f"{file}: layer {i} predicts {f_dim} neurons from "
                    f"{layer['fc1'].shape[-1]} inputs; the model has "
                    f"{cfg.intermediate_size} neurons and hidden size {cfg.hidden_size}"
                )
            layers.append(layer)
        return cls(layers=layers, ranks=ranks, report=json.loads(meta.get("report", "{}")))


def train_predictors(
    model,
    tokens: np.ndarray,
    pc: PredictorConfig = PredictorConfig(),
) -> Predictors:
    """Collects (residual, active mask) pairs over ``tokens`` and trains every layer's
    predictor; metrics are measured on the last ``held_out_fraction`` of the tokens."""
    inputs, masks = collect(model, np.asarray(tokens, np.int32))
    return fit_predictors(model.config, inputs, masks, pc)


def fit_predictors(
    cfg, inputs: list[np.ndarray], masks: list[np.ndarray], pc: PredictorConfig = PredictorConfig()
) -> Predictors:
    """Trains one predictor per layer (per expert) on collected pairs, see :func:`collect`.

    The last ``held_out_fraction`` of the samples is split in two: the first half calibrates
    the bias (``target_recall``), the second gives the reported metrics.
    """
    n = len(inputs[0])
    n_train = int(n * (1 - pc.held_out_fraction))
    bounds = [(0, n_train), (n_train, (n_train + n) // 2), ((n_train + n) // 2, n)]
    key = jax.random.key(pc.seed)
    layers, ranks, report = [], [], {"layers": [], "config": dataclasses.asdict(pc)}
    for i in tqdm(range(cfg.num_layers), desc="predictors", unit="layer"):
        x, y = inputs[i], masks[i]
        rank = choose_rank(y[:n_train], pc)
        # MoE: one predictor per expert, on the tokens routed to it; dense: one "expert"
        ys = [y[:, e] for e in range(cfg.num_experts)] if cfg.is_moe else [y]
        preds, held = [], []
        for e, ye in enumerate(ys):
            routed = ye.any(-1) if cfg.is_moe else np.ones(n, bool)
            rows, cal, rep = (lo + np.flatnonzero(routed[lo:hi]) for lo, hi in bounds)
            pred = train_one(x[rows], ye[rows], rank, pc, jax.random.fold_in(key, i * 1000 + e))
            if pc.target_recall is not None:
                pred = calibrate(pred, x[cal], ye[cal], pc.target_recall)
            preds.append(pred)
            held.append(metrics(pred, x[rep], ye[rep]))
        pred = jax.tree.map(lambda *a: jnp.stack(a), *preds) if cfg.is_moe else preds[0]
        layers.append(pred)
        ranks.append(rank)
        m = {k: float(np.mean([h[k] for h in held])) for k in held[0]}
        report["layers"].append({"layer": i, "rank": rank, **m})
    return Predictors(layers=layers, ranks=tuple(ranks), report=report)


def threshold_sweep(
    predictors: Predictors, inputs: list[np.ndarray], masks: list[np.ndarray], thresholds
) -> dict[str, np.ndarray]:
    """Recall, precision and predicted-active fraction per threshold and layer,
    ``[n_thresholds, L]`` each (dense models; the threshold is traced, so one compile)."""
    rows = [
        [
            metrics(p, x, y, float(t))
            for p, x, y in zip(predictors.layers, inputs, masks, strict=True)
        ]
        for t in thresholds
    ]
    return {
        k: np.array([[m[k] for m in row] for row in rows])
        for k in ("recall", "precision", "predicted_active", "true_active")
    }
