"""Sparse plans: which neurons each layer computes densely and how the rest are clustered.

Plain data (no JAX): the engines, the flash layout's header and the planner all carry a plan,
and reading a flash layout must not need the sparse engine. The layout the kernels read is made
from a plan by :func:`pi2lab.kernels.sparse_ffn.sparse_layout`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pi2lab.config import ModelConfig
from pi2lab.errors import ConfigError

CLUSTER_SIZES = (64, 32, 16, 8, 4, 2, 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClusterPlan:
    """Static layout of one layer's sparse FFN.

    Attributes:
      hot: Neurons ``[0, hot)`` computed densely every token.
      cluster_size: C, cold neurons per cluster; ``F - hot`` must be a multiple of C.
      capacity: Most cold clusters computed sparsely per token; beyond it, masked dense.
    """

    hot: int
    cluster_size: int
    capacity: int

    def num_clusters(self, neurons: int) -> int:
        return (neurons - self.hot) // self.cluster_size

    def check(self, neurons: int, where: str = "layer") -> None:
        cold = neurons - self.hot
        if not 0 <= self.hot <= neurons or self.cluster_size <= 0 or cold % self.cluster_size:
            raise ConfigError(
                f"{where}: hot={self.hot}, cluster_size={self.cluster_size} do not "
                f"tile {neurons} neurons; expected 0 <= hot <= {neurons} and "
                f"{neurons} - hot a multiple of cluster_size"
            )
        if not 0 <= self.capacity <= max(cold // self.cluster_size, 0):
            raise ConfigError(
                f"{where}: capacity={self.capacity}: expected 0..{cold // self.cluster_size} "
                f"(the cold clusters of {neurons} neurons)"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparsePlan:
    """Static layout of sparse decode: one :class:`ClusterPlan` per layer.

    Attributes:
      layers: Hot block, cluster size and cluster capacity of each layer.
    """

    layers: tuple[ClusterPlan, ...]

    @classmethod
    def uniform(
        cls,
        cfg: ModelConfig,
        *,
        hot: int = 0,
        cluster_size: int | None = None,
        capacity: int | None = None,
    ) -> SparsePlan:
        """The same plan in every layer. ``cluster_size`` defaults to the largest of
        64, 32, ... that tiles the cold neurons; ``capacity`` to every cold cluster."""
        cold = cfg.intermediate_size - hot
        c = cluster_size or next(c for c in CLUSTER_SIZES if cold % c == 0)
        plan = ClusterPlan(
            hot=hot, cluster_size=c, capacity=cold // c if capacity is None else capacity
        )
        return cls(layers=(plan,) * cfg.num_layers)

    @classmethod
    def from_frequency(
        cls, frequency: np.ndarray, *, cluster_size: int = 16, hot_min_frequency: float = 0.3
    ) -> SparsePlan:
        """Per-layer plans from hot-first firing frequencies ``[L, F]`` (``[L, E, F]``): the hot
        block covers the neurons firing on at least ``hot_min_frequency`` of tokens (every
        expert's, for MoE), rounded up so the cold rest tiles into clusters.

        Raises:
          ConfigError: ``cluster_size`` below 1.
        """
        if cluster_size < 1:
            raise ConfigError(f"cluster_size={cluster_size}: expected a positive integer")
        layers = []
        for freq in np.asarray(frequency):
            freq = freq.reshape(-1, freq.shape[-1]).max(0)  # worst expert for MoE
            f = freq.size
            hot = int(np.sum(freq >= hot_min_frequency))
            hot = f - ((f - hot) // cluster_size) * cluster_size
            cold = f - hot
            layers.append(
                ClusterPlan(hot=hot, cluster_size=cluster_size, capacity=cold // cluster_size)
            )
        return cls(layers=tuple(layers))

    def with_cluster_size(self, cluster_size: int, neurons: int) -> SparsePlan:
        """The same hot blocks (grown where needed so the cold neurons tile) with clusters of
        ``cluster_size`` and room for every cold cluster."""
        layers = []
        for lp in self.layers:
            hot = neurons - ((neurons - lp.hot) // cluster_size) * cluster_size
            cap = (neurons - hot) // cluster_size
            layers.append(ClusterPlan(hot=hot, cluster_size=cluster_size, capacity=cap))
        return SparsePlan(layers=tuple(layers))

    def check_layout(self, params: dict) -> None:
        """Raises ConfigError unless ``params`` hold the FFN in this plan's sparse layout."""
        for i, (p, lp) in enumerate(zip(params["layers"], self.layers, strict=True)):
            if (
                "cold_gate" not in p
                or p["hot_gate"].shape[-2] != lp.hot
                or (p["cold_gate"].shape[-2] != lp.cluster_size)
            ):
                raise ConfigError(
                    f"layer {i}: the FFN is not in the plan's sparse layout (hot={lp.hot}, "
                    f"cluster_size={lp.cluster_size}); expected sparse_layout(params, plan)"
                )

    def to_json(self) -> list[dict]:
        return [dataclasses.asdict(lp) for lp in self.layers]

    @classmethod
    def from_json(cls, rows: list[dict]) -> SparsePlan:
        return cls(layers=tuple(ClusterPlan(**row) for row in rows))

    def check(self, cfg: ModelConfig) -> None:
        if len(self.layers) != cfg.num_layers:
            raise ConfigError(
                f"sparse plan has {len(self.layers)} layers; the model has {cfg.num_layers}"
            )
        for i, lp in enumerate(self.layers):
            lp.check(cfg.intermediate_size, where=f"sparse plan layer {i}")
