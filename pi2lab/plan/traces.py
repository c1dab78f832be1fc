"""Unit-need traces for the simulator: which units of each FFN a decode token needs.

A trace gives, per layer, a bool array ``[T, U]`` (dense FFN) or ``[T, E, U]`` (MoE: experts a
token was not routed to are all-False) of the units each token needs, in hot-first unit order
(unit 0 is the most often needed, as the offline profile orders neurons). Three sources:

- :func:`recorded_masks`: a recorded :class:`~pi2lab.predict.profile.ActivationTrace`, its neuron
  masks grouped into units with :func:`pi2lab.cache.unit_masks`;
- :class:`SyntheticTrace`: units fire with Zipf-like frequencies (mean = density), and a unit
  active at token t-1 stays active with probability ``reuse`` (token-to-token correlation);
- :func:`fit_synthetic`: the (skew, reuse) whose synthetic trace best matches a recorded one's
  LRU hit-rate curve.

Anything with ``num_layers``, ``num_tokens`` and ``layer(i)`` serves the simulator, and so does a
plain list of per-layer arrays.

Shapes: T tokens, L layers, E experts, U units per FFN.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Literal

import numpy as np

from pi2lab.cache import simulate, unit_masks
from pi2lab.errors import ConfigError
from pi2lab.policies import LRU
from pi2lab.predict.profile import ActivationTrace
from pi2lab.predict.synthetic import CoactivationModel, zipf_frequency


def recorded_masks(trace: ActivationTrace, cluster_size: int = 1, hot: int = 0) -> list:
    """Per-layer unit masks ``[T, U]`` (``[T, E, U]`` for MoE) of a recorded trace, units of
    ``cluster_size`` neurons; the first ``hot`` neurons count as needed every token."""
    return [unit_masks(trace.active(i), cluster_size, hot) for i in range(trace.num_layers)]


def markov_masks(rng, frequency: np.ndarray, reuse: float, tokens: int) -> np.ndarray:
    """``[tokens, U]`` bool: unit i is active with stationary probability ``frequency[i]``; an
    active unit stays active with probability ``reuse``, otherwise (and when inactive) it fires
    afresh with ``q_i = p_i (1 - reuse) / (1 - reuse p_i)``, which keeps every unit's marginal
    at ``p_i`` (so the mean density holds exactly in expectation)."""
    p = np.asarray(frequency, np.float64)
    q = p * (1 - reuse) / np.maximum(1 - reuse * p, 1e-12)
    out = np.empty((tokens, p.size), bool)
    if tokens == 0:
        return out
    out[0] = rng.random(p.size) < p
    for t in range(1, tokens):
        u = rng.random(p.size)
        # kept (prob reuse) or fired afresh: P = reuse + (1 - reuse) q if active, else q
        out[t] = np.where(out[t - 1], u < reuse + (1 - reuse) * q, u < q)
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticTrace:
    """Synthetic unit masks: Zipf-like firing frequencies with token-to-token reuse.

    Layer ``i`` is generated on demand from ``(seed, i)``, so the same seed gives the same
    masks and a 32-layer trace need not sit in memory at once.

    Attributes:
      density: Mean fraction of units needed per token (per routed expert for MoE); one
        value, or one per layer.
      skew: Zipf exponent of the per-unit frequencies (0: uniform).
      reuse: Probability an active unit stays active at the next token (of its expert), [0, 1).
      units: U, units per FFN.
      layers: L.
      tokens: T, tokens per layer.
      seed: Random seed.
      experts: E for MoE (0: dense FFN).
      top_k: Experts routed per token (uniformly at random) for MoE.
    """

    density: float | tuple[float, ...]
    skew: float = 1.0
    reuse: float = 0.0
    units: int
    layers: int
    tokens: int = 64
    seed: int = 0
    experts: int = 0
    top_k: int = 0

    def __post_init__(self):
        dens = np.atleast_1d(np.asarray(self.density, np.float64))
        if dens.size not in (1, self.layers) or np.any((dens <= 0) | (dens > 1)):
            raise ConfigError(
                f"SyntheticTrace: density {self.density}: expected one value or one per layer "
                f"({self.layers}), each in (0, 1]"
            )
        if not 0 <= self.reuse < 1 or self.skew < 0:
            raise ConfigError(
                f"SyntheticTrace: skew={self.skew}, reuse={self.reuse}: expected skew >= 0, "
                "reuse in [0, 1)"
            )
        if min(self.units, self.layers) < 1 or self.tokens < 0:
            raise ConfigError("SyntheticTrace: units and layers must be >= 1, tokens >= 0")
        if self.experts and not 0 < self.top_k <= self.experts:
            raise ConfigError(f"SyntheticTrace: top_k={self.top_k}: expected 1..{self.experts}")

    @property
    def num_layers(self) -> int:
        return self.layers

    @property
    def num_tokens(self) -> int:
        return self.tokens

    def layer_density(self, i: int) -> float:
        d = np.atleast_1d(np.asarray(self.density, np.float64))
        return float(d[i if d.size > 1 else 0])

    def frequency(self, i: int) -> np.ndarray:
        """``[U]`` firing probability of each unit of layer ``i``, descending."""
        return zipf_frequency(self.units, density=self.layer_density(i), skew=self.skew)

    def layer(self, i: int) -> np.ndarray:
        """Layer ``i``'s masks: ``[T, U]`` bool, or ``[T, E, U]`` for MoE."""
        if not 0 <= i < self.layers:
            raise ConfigError(f"SyntheticTrace: layer {i}: expected 0..{self.layers - 1}")
        rng = np.random.default_rng([self.seed, i])
        freq = self.frequency(i)
        if not self.experts:
            return markov_masks(rng, freq, self.reuse, self.tokens)
        routed = np.argsort(rng.random((self.tokens, self.experts)), axis=1)[:, : self.top_k]
        out = np.zeros((self.tokens, self.experts, self.units), bool)
        for e in range(self.experts):
            rows = np.flatnonzero((routed == e).any(1))  # reuse runs over the expert's tokens
            out[rows, e] = markov_masks(rng, freq, self.reuse, rows.size)
        return out

    def masks(self) -> list[np.ndarray]:
        """Every layer's masks (all in memory)."""
        return [self.layer(i) for i in range(self.layers)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoactivationTrace:
    """Unit masks of neurons that fire in latent groups (:class:`CoactivationModel
    <pi2lab.predict.synthetic.CoactivationModel>`, one per layer, independent tokens), stored on
    flash in one of two orders: ``frequency`` (hot-first, as a profile orders neurons: a group's
    members lie apart) or ``coactivation`` (the ``hot`` most frequent units first, then group by
    group: a group's firings are adjacent, so the reads of a token merge into fewer, larger
    ones). One neuron per unit; dense FFNs only.

    Attributes:
      density: Mean fraction of units needed per token.
      units: U, units per FFN.
      layers: L.
      tokens: T.
      group_size: Units per latent group.
      coherence: Mean probability a member fires when its group does (PowerInfer-2: outside
        the hot set, different neurons co-activate under 20% of the time).
      noise: Share of firings independent of the groups.
      skew: Zipf exponent of the group rates.
      order: ``frequency`` or ``coactivation``.
      hot: Units kept first in ``coactivation`` order (the hot set).
      seed: Random seed (the same seed gives the same firings in either order).
    """

    density: float
    units: int
    layers: int
    tokens: int = 64
    group_size: int = 16
    coherence: float = 0.7
    noise: float = 0.1
    skew: float = 1.0
    order: Literal["frequency", "coactivation"] = "frequency"
    hot: int = 0
    seed: int = 0

    def __post_init__(self):
        if self.order not in ("frequency", "coactivation"):
            raise ConfigError(
                f"CoactivationTrace: order={self.order!r}: expected frequency or coactivation"
            )
        if min(self.units, self.layers) < 1 or self.tokens < 0 or not 0 <= self.hot <= self.units:
            raise ConfigError(
                f"CoactivationTrace: units={self.units}, layers={self.layers}, tokens="
                f"{self.tokens}, hot={self.hot}: expected units, layers >= 1, tokens >= 0, "
                "0 <= hot <= units"
            )
        self.model(0)  # checks density, group size, coherence, noise, skew

    @property
    def num_layers(self) -> int:
        return self.layers

    @property
    def num_tokens(self) -> int:
        return self.tokens

    def model(self, i: int) -> CoactivationModel:
        """Layer ``i``'s firing model."""
        return CoactivationModel(
            neurons=self.units,
            density=self.density,
            group_size=self.group_size,
            coherence=self.coherence,
            noise=self.noise,
            skew=self.skew,
            seed=self.seed * 100_003 + i,
        )

    def layer(self, i: int) -> np.ndarray:
        """Layer ``i``'s masks ``[T, U]``, in :attr:`order`."""
        if not 0 <= i < self.layers:
            raise ConfigError(f"CoactivationTrace: layer {i}: expected 0..{self.layers - 1}")
        model = self.model(i)
        masks = model.sample(np.random.default_rng([self.seed, i, 2]), self.tokens)
        return masks if self.order == "frequency" else masks[:, model.placement(self.hot)]


def trace_stats(masks: np.ndarray) -> tuple[float, float]:
    """``(density, reuse)`` estimated from one FFN's masks ``[T, U]``.

    ``reuse`` is the moment estimate of the :func:`markov_masks` model: per unit,
    ``P(on | on before) = reuse + (1 - reuse) q_i`` with ``q_i = P(on | off before)``; pooled over
    units, ``reuse = (n11 - S) / (n1 - S)`` with ``S = sum_i n1_i q_i`` (units never off, e.g.
    a capped Zipf head, are left out).
    """
    m = np.asarray(masks, bool)
    if m.ndim != 2 or m.shape[0] < 2:
        raise ConfigError(f"trace_stats: masks shape {m.shape}: expected [T >= 2, U] bool")
    prev, cur = m[:-1], m[1:]
    n1 = prev.sum(0).astype(np.float64)  # [U]
    n11 = (prev & cur).sum(0).astype(np.float64)
    n0 = (~prev).sum(0).astype(np.float64)
    n01 = (~prev & cur).sum(0).astype(np.float64)
    # a unit never off carries no information on reuse (and has no q)
    ok = n0 > 0
    q = n01[ok] / n0[ok]
    s = float((n1[ok] * q).sum())
    den = float(n1[ok].sum()) - s
    reuse = (float(n11[ok].sum()) - s) / den if den > 0 else 0.0
    return float(m.mean()), float(np.clip(reuse, 0.0, 1.0))


def lru_curve(masks: Sequence[np.ndarray], fractions: Sequence[float], warmup: int = 0):
    """``[C]`` LRU hit rate at each capacity (share of U), averaged over the given layers'
    ``[T, U]`` masks."""
    out = []
    for f in fractions:
        rates = [simulate(LRU(), m, max(1, round(f * m.shape[1])), warmup).hit_rate for m in masks]
        out.append(float(np.nanmean(rates)))
    return np.array(out)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SyntheticFit:
    """The outcome of :func:`fit_synthetic`.

    Attributes:
      skew: Best Zipf exponent on the grid.
      reuse: Best reuse on the grid.
      density: Per-layer densities of the recorded masks (the synthetic trace uses them).
      error: Root-mean-square hit-rate difference of the best fit over the capacities.
      fractions: Capacities (share of U) the curves were compared at.
      target: ``[C]`` the recorded LRU hit rates.
      fitted: ``[C]`` the best synthetic trace's LRU hit rates.
      grid: ``(skew, reuse, rms error)`` of every grid point.
    """

    skew: float
    reuse: float
    density: tuple[float, ...]
    error: float
    fractions: tuple[float, ...]
    target: np.ndarray
    fitted: np.ndarray
    grid: tuple[tuple[float, float, float], ...]


def fit_synthetic(
    masks: np.ndarray | Sequence[np.ndarray],
    *,
    fractions: Sequence[float] = (0.05, 0.1, 0.2, 0.4),
    skews: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5),
    reuses: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8),
    tokens: int | None = 512,
    warmup: int = 0,
    seed: int = 0,
) -> SyntheticFit:
    """Fits ``(skew, reuse)`` of :class:`SyntheticTrace` to recorded masks by least squares on the
    LRU hit-rate curve (:func:`pi2lab.cache.simulate` with :class:`~pi2lab.policies.LRU` at each
    capacity in ``fractions``), over the ``skews x reuses`` grid.

    Args:
      masks: One FFN's ``[T, U]`` bool masks, or a list of them (layers; each keeps its own
        density in the synthetic trace, one (skew, reuse) fits them all).
      tokens: Use at most this many leading tokens of each (None: all); the cost is
        grid size x capacities x layers x tokens cache steps.
    """
    layers = [masks] if isinstance(masks, np.ndarray) and masks.ndim == 2 else list(masks)
    layers = [np.asarray(m, bool)[:tokens] for m in layers]
    if not layers or any(m.ndim != 2 or m.shape[0] < 2 for m in layers):
        raise ConfigError("fit_synthetic: expected [T >= 2, U] bool masks (one or a list)")
    dens = tuple(max(float(m.mean()), 1.0 / m.size) for m in layers)
    target = lru_curve(layers, fractions, warmup)
    grid = []
    for skew, reuse in itertools.product(skews, reuses):
        synth = [
            SyntheticTrace(
                density=d,
                skew=skew,
                reuse=reuse,
                units=m.shape[1],
                layers=1,
                tokens=m.shape[0],
                seed=seed + i,
            ).layer(0)
            for i, (m, d) in enumerate(zip(layers, dens, strict=True))
        ]
        curve = lru_curve(synth, fractions, warmup)
        grid.append(
            (float(skew), float(reuse), float(np.sqrt(np.mean((curve - target) ** 2))), curve)
        )
    best = min(grid, key=lambda g: g[2])
    return SyntheticFit(
        skew=best[0],
        reuse=best[1],
        density=dens,
        error=best[2],
        fractions=tuple(fractions),
        target=target,
        fitted=best[3],
        grid=tuple(g[:3] for g in grid),
    )
