"""Training a small sparse (dReLU) decoder from scratch with optax.

The loss is next-token cross-entropy plus ``l1`` times an L1 penalty on FFN activations, the
lever TurboSparse and ProSparse use to push ReLU-family FFNs sparser. Each neuron's share of the
penalty is weighted by how often it fires in the batch: with a uniform weight, rarely firing
neurons were pushed to never firing (10% dead on held-out text after 300 steps in our first
run). ``l1`` is not fixed: after warm-up a multiplicative controller steers the measured
per-token sparsity of each batch towards ``target_sparsity`` (a fixed coefficient either
undershoots or, a little higher, kills neurons outright). Neurons that still stop firing
altogether are re-initialised during the first part of the run (see ``resample_dead``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from pi2lab.config import ModelConfig
from pi2lab.errors import TrainingError
from pi2lab.model.params import init_params
from pi2lab.model.transformer import forward


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Settings of one training run.

    Attributes:
      seq_len: Tokens per training sequence.
      batch_size: Sequences per step.
      steps: Optimiser steps; when None the run lasts ``time_budget_s`` and the learning-rate
        schedule follows elapsed time instead of steps.
      time_budget_s: Wall-clock budget (always enforced).
      learning_rate: Peak AdamW learning rate.
      warmup_fraction: Share of the run spent on linear warm-up (no L1 during it).
      weight_decay: AdamW weight decay.
      target_sparsity: Per-token FFN sparsity the L1 controller steers to.
      l1_init: L1 coefficient when the controller starts.
      l1_gain: Controller gain: ``l1 *= exp(gain * (target - sparsity))`` per step.
      eval_every: Steps between held-out evaluations; the best checkpoint is kept.
      eval_sequences: Held-out sequences per evaluation.
      resample_every: Steps per window; FFN neurons that fired fewer than
        ``resample_min_fires`` times in a window are re-initialised (dense FFNs; the
        dead-neuron resampling of sparse autoencoders). With the defaults that is a firing
        rate under 5e-5, at which a neuron is likely silent on a 20K-token held-out text.
      resample_min_fires: See ``resample_every``.
      resample_until: Share of the run after which no more neurons are resampled.
      seed: Seed of initialisation and batch sampling.
    """

    seq_len: int = 256
    batch_size: int = 16
    steps: int | None = None
    time_budget_s: float = 3600.0
    learning_rate: float = 2e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    target_sparsity: float = 0.9
    l1_init: float = 1e-2
    l1_gain: float = 0.05
    eval_every: int = 100
    eval_sequences: int = 64
    resample_every: int = 100
    resample_min_fires: int = 20
    resample_until: float = 0.6
    seed: int = 0

    def __post_init__(self):
        at_least_1 = {
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "eval_every": self.eval_every,
            "eval_sequences": self.eval_sequences,
            "resample_every": self.resample_every,
        }
        if self.steps is not None:
            at_least_1["steps"] = self.steps
        for name, value in at_least_1.items():
            if not value >= 1:
                raise TrainingError(f"{name}={value}: expected an integer >= 1")
        # written so that NaN fails every check
        if not self.time_budget_s > 0:
            raise TrainingError(f"time_budget_s={self.time_budget_s}: expected seconds > 0")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise TrainingError(f"learning_rate={self.learning_rate}: expected a finite number > 0")
        if not 0 <= self.warmup_fraction < 1:
            raise TrainingError(
                f"warmup_fraction={self.warmup_fraction}: expected 0 <= warmup_fraction < 1"
            )
        for name, value in {
            "target_sparsity": self.target_sparsity,
            "resample_until": self.resample_until,
        }.items():
            if not 0 <= value <= 1:
                raise TrainingError(f"{name}={value}: expected 0 <= {name} <= 1")
        if not (self.weight_decay >= 0 and self.l1_init > 0 and self.resample_min_fires >= 0):
            raise TrainingError(
                f"weight_decay={self.weight_decay}, l1_init={self.l1_init}, "
                f"resample_min_fires={self.resample_min_fires}: expected weight_decay >= 0, "
                "l1_init > 0, resample_min_fires >= 0"
            )


def _frequency_weighted_l1(act: jax.Array) -> jax.Array:
    """``mean_n f_n * mean_t |act_tn| / mean_n f_n`` with ``f_n`` the neuron's firing rate in the
    batch (no gradient through it): frequent neurons carry the penalty, rarely firing ones
    are spared, so the push towards sparsity does not kill them."""
    freq = jax.lax.stop_gradient(jnp.mean(act != 0, axis=(0, 1)))  # [F]
    per_neuron = jnp.mean(jnp.abs(act), axis=(0, 1))  # [F]
    return jnp.sum(freq * per_neuron) / jnp.maximum(jnp.sum(freq), 1e-6)


def _loss(params, cfg: ModelConfig, batch, l1):
    logits, _, acts = forward(params, cfg, batch[:, :-1])
    logp = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.mean(jnp.take_along_axis(logp, batch[:, 1:, None], axis=-1))
    l1_term = sum(_frequency_weighted_l1(a) for a in acts) / len(acts)
    sparsity = sum(jnp.mean(a == 0) for a in acts) / len(acts)
    fired = jnp.stack([jnp.sum(a != 0, axis=(0, 1)) for a in acts])  # [L, F] token counts
    return ce + l1 * l1_term, (ce, sparsity, fired)


@functools.partial(jax.jit, static_argnames=("cfg", "optimizer"), donate_argnums=(0, 1))
def _train_step(params, opt_state, batch, l1, lr, cfg: ModelConfig, optimizer):
    grads, (ce, sparsity, fired) = jax.grad(_loss, has_aux=True)(params, cfg, batch, l1)
    opt_state.hyperparams["learning_rate"] = lr
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, ce, sparsity, fired


@functools.partial(jax.jit, static_argnames=("cfg",))
def _eval_step(params, batch, cfg: ModelConfig):
    logits, _, acts = forward(params, cfg, batch[:, :-1])
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, batch[:, 1:, None], axis=-1)[..., 0]
    fired = jnp.stack([jnp.sum(a != 0, axis=(0, 1)) for a in acts])  # [L, F] token counts
    return jnp.sum(nll), fired


def resample_dead(
    params: dict, dead: np.ndarray, rng: np.random.Generator, std: float = 0.02
) -> tuple[dict, int]:
    """Re-initialises the FFN neurons marked ``dead [L, F]``: fresh random gate and up rows
    (so the neuron fires again on about a quarter of tokens) and a zero down row (so the
    model's output does not jump). Returns the parameters and how many were resampled."""
    layers = []
    for p, mask in zip(params["layers"], dead, strict=True):
        rows = np.flatnonzero(mask)
        if rows.size:
            shape, dtype = (2, rows.size, p["gate"].shape[-1]), p["gate"].dtype
            gate, up = jnp.asarray(rng.normal(0.0, std, shape), dtype)
            p = {
                **p,
                "gate": p["gate"].at[rows].set(gate),
                "up": p["up"].at[rows].set(up),
                "down": p["down"].at[rows].set(0.0),
            }
        layers.append(p)
    return {**params, "layers": layers}, int(dead.sum())


def held_out_stats(params, cfg: ModelConfig, sequences: np.ndarray) -> dict:
    """Perplexity and FFN activation statistics over ``sequences [N, seq_len + 1]``.

    Sparsity per layer is the mean fraction of neurons with zero activation per token; a
    neuron is dead when it never fires on this text; ``top10_share`` is the share of all
    activations that the 10% most frequently firing neurons of a layer account for.
    """
    nll, fired, tokens = 0.0, 0, 0
    for chunk in np.array_split(sequences, max(1, len(sequences) // 16)):
        s, f = _eval_step(params, jnp.asarray(chunk), cfg)
        nll += float(s)
        fired = fired + np.asarray(f, np.int64)
        tokens += chunk.shape[0] * (chunk.shape[1] - 1)
    f_neurons = fired.shape[1]
    top = max(1, f_neurons // 10)
    top_share = np.sort(fired, axis=1)[:, ::-1][:, :top].sum(1) / np.maximum(fired.sum(1), 1)
    return {
        "perplexity": math.exp(nll / tokens),
        "tokens": tokens,
        "sparsity_per_layer": (1 - fired.sum(1) / (tokens * f_neurons)).tolist(),
        "dead_fraction_per_layer": (fired == 0).mean(1).tolist(),
        "top10_share_per_layer": top_share.tolist(),
    }


def make_sequences(stream: np.ndarray, seq_len: int, limit: int | None = None) -> np.ndarray:
    """Non-overlapping windows of ``seq_len + 1`` tokens ``[N, seq_len + 1]``."""
    n = (stream.size - 1) // seq_len
    if limit is not None:
        n = min(n, limit)
    return np.stack([stream[i * seq_len : i * seq_len + seq_len + 1] for i in range(n)])


def train(
    cfg: ModelConfig,
    tc: TrainConfig,
    train_stream: np.ndarray,
    held_out_stream: np.ndarray,
    *,
    log: Callable[[dict], None] = lambda r: None,
) -> tuple[dict, list[dict]]:
    """Trains from scratch; returns the parameters with the best held-out loss and the log."""
    if train_stream.size < 10 * (tc.seq_len + 1) or held_out_stream.size < tc.seq_len + 1:
        raise TrainingError(
            f"corpus too small: {train_stream.size} train and "
            f"{held_out_stream.size} held-out tokens for seq_len={tc.seq_len}"
        )
    rng = np.random.default_rng(tc.seed)
    params = init_params(cfg, jax.random.key(tc.seed))
    optimizer = optax.inject_hyperparams(
        lambda learning_rate: optax.chain(
            optax.clip_by_global_norm(1.0),
            optax.adamw(learning_rate, b2=0.95, weight_decay=tc.weight_decay),
        )
    )(learning_rate=0.0)
    opt_state = optimizer.init(params)
    eval_seqs = jnp.asarray(make_sequences(held_out_stream, tc.seq_len, tc.eval_sequences))
    best, best_ppl, history = None, float("inf"), []
    l1 = 0.0
    window, total_resampled = 0, 0
    t0 = time.perf_counter()
    step = 0
    bar = tqdm(total=tc.steps, desc="train", unit="step")
    while True:
        elapsed = time.perf_counter() - t0
        frac = step / tc.steps if tc.steps else elapsed / tc.time_budget_s
        if frac >= 1.0 or elapsed >= tc.time_budget_s:
            break
        warm = tc.warmup_fraction
        lr = tc.learning_rate * (
            frac / warm
            if frac < warm
            else 0.5 * (1 + math.cos(math.pi * (frac - warm) / (1 - warm)))
        )
        starts = rng.integers(0, train_stream.size - tc.seq_len - 1, tc.batch_size)
        batch = jnp.asarray(np.stack([train_stream[s : s + tc.seq_len + 1] for s in starts]))
        params, opt_state, ce, sparsity, fired = _train_step(
            params, opt_state, batch, jnp.float32(l1), jnp.float32(lr), cfg, optimizer
        )
        ce, sparsity = float(ce), float(sparsity)
        window = window + np.asarray(fired, np.int64)
        resampled = 0
        if (step + 1) % tc.resample_every == 0:
            if frac < tc.resample_until and not cfg.is_moe:
                params, resampled = resample_dead(params, window < tc.resample_min_fires, rng)
                total_resampled += resampled
            window = 0
        if frac >= warm:  # the controller starts after warm-up
            l1 = tc.l1_init if l1 == 0.0 else l1
            l1 = float(
                np.clip(l1 * math.exp(tc.l1_gain * (tc.target_sparsity - sparsity)), 1e-6, 10.0)
            )
        step += 1
        bar.update(1)
        bar.set_postfix(ce=f"{ce:.3f}", sparsity=f"{sparsity:.3f}", l1=f"{l1:.2e}")
        if step % tc.eval_every == 0:
            stats = held_out_stats(params, cfg, eval_seqs)
            record = {
                "step": step,
                "tokens_seen": step * tc.batch_size * tc.seq_len,
                "elapsed_s": round(time.perf_counter() - t0, 1),
                "lr": lr,
                "l1": l1,
                "train_ce": ce,
                "train_sparsity": sparsity,
                "held_out_perplexity": stats["perplexity"],
                "held_out_sparsity": float(np.mean(stats["sparsity_per_layer"])),
                "held_out_dead": float(np.mean(stats["dead_fraction_per_layer"])),
                "resampled_total": total_resampled,
            }
            history.append(record)
            log(record)
            if frac >= 0.5 and stats["perplexity"] < best_ppl:
                best_ppl = stats["perplexity"]
                best = jax.tree.map(np.asarray, params)
    bar.close()
    final = jax.tree.map(np.asarray, params)
    if best is None or held_out_stats(final, cfg, eval_seqs)["perplexity"] <= best_ppl:
        best = final
    history.append(
        {
            "step": step,
            "tokens_seen": step * tc.batch_size * tc.seq_len,
            "elapsed_s": round(time.perf_counter() - t0, 1),
            "final": True,
        }
    )
    return jax.tree.map(jnp.asarray, best), history
