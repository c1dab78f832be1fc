"""Synthetic activation masks for model shapes nobody has traced here (7B-shaped benchmarks,
the simulator), in two kinds:

- :func:`zipf_frequency` + :func:`independent_masks`: every neuron fires on its own with a
  Zipf-like frequency. No two neurons fire together more often than chance: the worst case
  for clusters.
- :class:`CoactivationModel`: neurons belong to latent groups that fire together (each
  member with its own probability when its group fires) plus independent background firing,
  with Zipf-skewed group frequencies; :meth:`CoactivationModel.fit` chooses the structure
  whose cluster statistics match a recorded trace.

Masks are returned in hot-first order (neurons sorted by their firing probability, as the
offline profile orders them), which scatters each group over the order as a real profile
does. Shapes: T tokens, F neurons, G groups.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from pi2lab.errors import ConfigError
from pi2lab.predict.placement import cluster_stats, coactivation_order


def zipf_frequency(neurons: int, *, density: float = 0.1, skew: float = 1.0) -> np.ndarray:
    """Per-neuron firing probabilities ``[F]``, descending, ``min(1, c / (i+1)^skew)`` with c
    chosen so the mean is ``density``."""
    raw = 1.0 / np.arange(1, neurons + 1) ** skew
    # the bracket must reach the mean: a steep skew saturates many neurons at 1 first
    lo, hi = 0.0, neurons / raw.sum()
    while np.minimum(1.0, hi * raw).mean() < density:
        hi *= 2
    for _ in range(100):
        c = (lo + hi) / 2
        lo, hi = (c, hi) if np.minimum(1.0, c * raw).mean() < density else (lo, c)
    return np.minimum(1.0, c * raw)


def independent_masks(rng: np.random.Generator, frequency: np.ndarray, tokens: int) -> np.ndarray:
    """``[T, F]`` bool: neuron i fires with probability ``frequency[i]``, independently."""
    return rng.random((tokens, frequency.size)) < frequency


@dataclasses.dataclass(frozen=True, kw_only=True)
class CoactivationModel:
    """Neurons that fire in latent groups.

    On each token group g fires with probability ``pi_g`` (Zipf-skewed over groups); a member
    of a firing group fires with its own probability ``c_i`` (uniform in
    ``[coherence / 2, min(1, 3 coherence / 2)]``), and every neuron also fires on its own with
    probability ``noise`` times its share of the density. ``pi`` is scaled so the mean
    firing rate is ``density``.

    Attributes:
      neurons: F.
      density: Mean share of neurons firing per token, (0, 1).
      group_size: Neurons per latent group (>= 1; the last group may be smaller).
      coherence: Mean probability a member fires when its group does, (0, 1].
      noise: Share of firings that are independent of the groups, [0, 1).
      skew: Zipf exponent of the group frequencies.
      seed: Fixes group membership and per-neuron probabilities.
    """

    neurons: int
    density: float = 0.1
    group_size: int = 32
    coherence: float = 0.7
    noise: float = 0.1
    skew: float = 1.0
    seed: int = 0

    def __post_init__(self):
        ok = (
            self.neurons >= 1
            and 0 < self.density < 1
            and self.group_size >= 1
            and 0 < self.coherence <= 1
            and 0 <= self.noise < 1
            and self.skew >= 0
        )
        if not ok:
            raise ConfigError(
                f"CoactivationModel {self}: expected neurons >= 1, density in (0, 1), "
                "group_size >= 1, coherence in (0, 1], noise in [0, 1), skew >= 0"
            )

    def _structure(self):
        """Group of each neuron ``[F]``, member probabilities ``[F]``, group rates ``[G]``,
        background rates ``[F]``, all in hot-first order."""
        rng = np.random.default_rng([self.seed, 1])
        f, g = self.neurons, -(-self.neurons // self.group_size)
        group = rng.permutation(np.arange(f) // self.group_size)
        c = np.minimum(rng.uniform(0.5, 1.5, f) * self.coherence, 1.0)
        grouped = (1 - self.noise) * self.density  # mean rate that comes from groups
        pi = zipf_frequency(g, density=min(grouped / c.mean(), 1.0), skew=self.skew)
        pi = pi[rng.permutation(g)]
        background = self.noise * self.density * np.ones(f)
        marginal = pi[group] * c + background * (1 - pi[group] * c)
        order = np.argsort(-marginal, kind="stable")  # hot-first, as a profile orders them
        return group[order], c[order], pi, background[order]

    def frequency(self) -> np.ndarray:
        """``[F]`` each neuron's firing probability (hot-first order, descending)."""
        group, c, pi, background = self._structure()
        p = pi[group] * c
        return p + background * (1 - p)

    def placement(self, hot: int = 0) -> np.ndarray:
        """A permutation ``[F]`` of the hot-first neurons that stores them by co-activation:
        the ``hot`` most frequent keep their place, the rest follow group by group (the most
        often firing groups first, members by frequency), so a group's firings are adjacent.
        The placement :func:`pi2lab.predict.placement.coactivation_order` looks for in a
        recorded trace, here known from the model."""
        if not 0 <= hot <= self.neurons:
            raise ConfigError(f"placement: hot={hot}: expected 0..{self.neurons}")
        group, _, pi, _ = self._structure()
        cold = np.arange(hot, self.neurons)
        # by group rate (descending), then group id, then hot-first position
        order = np.lexsort((cold, group[cold], -pi[group[cold]]))
        return np.concatenate([np.arange(hot), cold[order]])

    def sample(self, rng: np.random.Generator, tokens: int) -> np.ndarray:
        """``[T, F]`` bool masks in hot-first order."""
        group, c, pi, background = self._structure()
        groups = rng.random((tokens, pi.size)) < pi  # [T, G]
        member = groups[:, group] & (rng.random((tokens, self.neurons)) < c)
        return member | (rng.random((tokens, self.neurons)) < background)

    @classmethod
    def fit(
        cls,
        masks: np.ndarray,
        *,
        cluster_size: int = 16,
        tokens: int = 2048,
        seed: int = 0,
        group_sizes=(2, 4, 8, 16, 32, 64),
        coherences=(0.3, 0.5, 0.7, 0.9),
        noises=(0.1, 0.3, 0.5, 0.7),
        skews=(0.5, 1.0, 1.5),
    ) -> tuple[CoactivationModel, dict]:
        """The grid point whose masks match the recorded ``masks [T, F]`` best on what sparse
        decode sees: the share of ``cluster_size`` clusters active per token in frequency
        order and in co-activation order (fitted on one half of the tokens, measured on the
        other), and the firing probability of the 10% most frequent neurons. Returns the
        model and the recorded and fitted statistics."""
        masks = np.asarray(masks, bool)
        f = masks.shape[1] - masks.shape[1] % cluster_size
        masks = masks[:, :f]

        def stats(m):
            m = m[:, np.argsort(-m.mean(0), kind="stable")]
            half = m.shape[0] // 2
            perm = coactivation_order(m[:half], 0, cluster_size)
            top = np.sort(m.mean(0))[::-1][: max(f // 10, 1)].mean()
            return np.array(
                [
                    cluster_stats(m[half:], 0, cluster_size)["clusters_active_share"],
                    cluster_stats(m[half:, perm], 0, cluster_size)["clusters_active_share"],
                    top,
                ]
            )

        want = stats(masks)
        density = float(np.clip(masks.mean(), 1e-4, 0.999))
        best, best_err = None, np.inf
        for g, c, n, s in itertools.product(group_sizes, coherences, noises, skews):
            model = cls(neurons=f, density=density, group_size=g, coherence=c, noise=n, skew=s)
            got = stats(model.sample(np.random.default_rng(seed), tokens))
            err = float(np.abs(got - want).sum())
            if err < best_err:
                best, best_err, best_stats = model, err, got
        names = ("clusters_active_frequency_order", "clusters_active_coactivation_order", "top10")
        report = {
            "recorded": dict(zip(names, np.round(want, 4).tolist(), strict=True)),
            "fitted": dict(zip(names, np.round(best_stats, 4).tolist(), strict=True)),
        }
        return best, report
