"""Built-in model shapes for phone-scale simulation (:mod:`pi2lab.plan.simulator`).

A :class:`ModelShape` is what the simulator needs to know about a model without its weights:
the :class:`~pi2lab.config.ModelConfig` (sizes), how sparse each FFN is at decode, how skewed the
firing frequencies are, and how the weights are stored (bytes per neuron bundle, quantization
scales, predictors). Every sparsity figure names its source in :attr:`ModelShape.sources`; where
the papers (PowerInfer-2, TurboSparse) give no figure, the value is marked
``assumed`` or ``calibrated`` and says from what.

Storage (defaults): FFN bundles in int4 with one f16 scale per 32 elements of a row, the scales
resident (PowerInfer-2 keeps them in memory: 2.7 GB of Mixtral-47B's 7 GB budget, which is
45.1B FFN weights x 2 bytes / 32; 32 weights per scale is also pi2lab's block format, llama.cpp's
Q4_0). At D = 4096 a bundle (gate row, up row, down column) is 3 * 4096 / 2 = 6 KiB of payload,
padded to an 8 KiB read stride, the 8 KB read per neuron the paper describes (its 7.5 KB bundle
evidently carries finer-grained scales inline; here they stay resident, as
:mod:`pi2lab.storage.layout` does). Non-FFN weights (attention, embeddings, LM head) are stored
the same way.

Units: bytes; "neuron" is one FFN row/column triple, "unit" is ``cluster_size`` neurons, the
amount one read fetches.
"""

from __future__ import annotations

import dataclasses

from pi2lab.config import ModelConfig
from pi2lab.errors import ConfigError
from pi2lab.storage.layout import BITS, StorageDtype, round_up

PAPER = "PowerInfer-2 / TurboSparse, arXiv 2406.06282 / 2406.05955"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelShape:
    """A model as the simulator sees it: sizes, decode sparsity, storage.

    Attributes:
      name: Short name (``turbosparse-mistral-7b``...).
      config: Sizes: hidden, FFN, layers, heads, kv heads, vocab, experts / top-k.
      active_fraction: ``[L]`` mean fraction of FFN neurons active per decode token, per layer
        (per routed expert for MoE).
      skew: Zipf exponent of the per-neuron firing frequencies (hot-set skew; see
        :func:`pi2lab.predict.synthetic.zipf_frequency`).
      reuse: Token-to-token correlation: probability that a unit active at token t-1 stays
        active at t (see :class:`pi2lab.plan.traces.SyntheticTrace`).
      dtype: Storage dtype of FFN bundles and of the other weights.
      group_size: Elements per quantization scale (quantized dtypes).
      scale_bytes: Bytes per scale (2: f16).
      cluster_size: Neurons per unit (per read); 1 = one bundle per read, as PowerInfer-2.
      predictor_rank: Rank r of the per-FFN predictor (d -> r -> F, f16 weights and biases).
      kv_bytes: Bytes per KV-cache element (2: f16).
      sources: Field -> where its number comes from.
    """

    name: str
    config: ModelConfig
    active_fraction: tuple[float, ...]
    skew: float = 1.8
    reuse: float = 0.15
    dtype: StorageDtype = "int4"
    group_size: int = 32
    scale_bytes: int = 2
    cluster_size: int = 1
    predictor_rank: int = 256
    kv_bytes: int = 2
    sources: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        cfg = self.config
        if len(self.active_fraction) != cfg.num_layers:
            raise ConfigError(
                f"model shape {self.name!r}: active_fraction has {len(self.active_fraction)} "
                f"entries: expected one per layer ({cfg.num_layers})"
            )
        if not all(0 < a <= 1 for a in self.active_fraction):
            raise ConfigError(f"model shape {self.name!r}: active fractions must be in (0, 1]")
        if self.skew < 0 or not 0 <= self.reuse < 1:
            raise ConfigError(
                f"model shape {self.name!r}: skew={self.skew}, reuse={self.reuse}: expected "
                "skew >= 0 and reuse in [0, 1)"
            )
        if self.dtype not in BITS:
            raise ConfigError(f"model shape {self.name!r}: dtype {self.dtype!r} unknown")
        if self.quantized and cfg.hidden_size % self.group_size:
            raise ConfigError(
                f"model shape {self.name!r}: group_size={self.group_size} does not divide "
                f"hidden {cfg.hidden_size}"
            )
        if self.cluster_size < 1 or cfg.intermediate_size % self.cluster_size:
            raise ConfigError(
                f"model shape {self.name!r}: cluster_size={self.cluster_size} does not tile "
                f"{cfg.intermediate_size} neurons"
            )

    # -- storage -----------------------------------------------------------------------------
    @property
    def quantized(self) -> bool:
        return self.dtype in ("int4", "int8")

    @property
    def bytes_per_param(self) -> float:
        """Stored bytes per weight, scales included."""
        scales = self.scale_bytes / self.group_size if self.quantized else 0.0
        return BITS[self.dtype] / 8 + scales

    @property
    def bundle_bytes(self) -> int:
        """Payload bytes of one neuron's bundle (gate row, up row, down column), no scales."""
        return 3 * self.config.hidden_size * BITS[self.dtype] // 8

    @property
    def gate_bytes(self) -> int:
        """Payload bytes of one gate row (what gate-first loading reads first)."""
        return self.config.hidden_size * BITS[self.dtype] // 8

    @property
    def scale_bytes_per_neuron(self) -> int:
        """Resident scale bytes of one neuron's bundle (0 for float dtypes)."""
        if not self.quantized:
            return 0
        return 3 * self.config.hidden_size // self.group_size * self.scale_bytes

    @property
    def units(self) -> int:
        """U, units per FFN (per expert)."""
        return self.config.intermediate_size // self.cluster_size

    @property
    def unit_bytes(self) -> int:
        """Payload bytes of one unit."""
        return self.cluster_size * self.bundle_bytes

    @property
    def stride(self) -> int:
        """Bytes per unit on flash and per cache slot: the payload padded to 4 KiB (the read)."""
        return round_up(self.unit_bytes)

    @property
    def num_ffns(self) -> int:
        """FFNs with their own bundle file and cache: layers x experts."""
        return self.config.num_layers * max(self.config.num_experts, 1)

    def ffn_bytes(self) -> int:
        """Bundle payload bytes of every FFN (what offloading can take out of memory)."""
        return self.num_ffns * self.units * self.unit_bytes

    def scale_bytes_total(self) -> int:
        """Resident quantization scales of every FFN."""
        return self.num_ffns * self.config.intermediate_size * self.scale_bytes_per_neuron

    # -- resident part ---------------------------------------------------------------------------
    def attention_bytes(self) -> int:
        """Stored bytes of one layer's attention weights (q, k, v, o; plus the router for
        MoE); norms are negligible and left out."""
        c = self.config
        params = c.hidden_size * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
        params += c.hidden_size * c.num_experts
        return int(params * self.bytes_per_param)

    def head_bytes(self) -> int:
        """Stored bytes of the LM head (read every token)."""
        return int(self.config.vocab_size * self.config.hidden_size * self.bytes_per_param)

    def nonffn_bytes(self) -> int:
        """Non-FFN weights: attention of every layer, embeddings and LM head."""
        embed = 0 if self.config.tie_word_embeddings else self.head_bytes()
        return self.config.num_layers * self.attention_bytes() + self.head_bytes() + embed

    def predictor_bytes(self) -> int:
        """One FFN's (one expert's) predictor: f16 ``fc1 [r, D]``, ``fc2 [F, r]`` and biases."""
        c, r = self.config, self.predictor_rank
        return 2 * (r * c.hidden_size + c.intermediate_size * r + r + c.intermediate_size)

    def kv_cache_bytes(self, capacity: int) -> int:
        """KV cache of ``capacity`` positions."""
        c = self.config
        return 2 * c.num_layers * capacity * c.num_kv_heads * c.head_dim * self.kv_bytes

    def resident_bytes(self, kv_capacity: int, *, predictors: bool = True) -> int:
        """What never leaves memory: non-FFN weights, predictors, FFN scales and KV cache."""
        preds = self.num_ffns * self.predictor_bytes() if predictors else 0
        return (
            self.nonffn_bytes()
            + preds
            + self.scale_bytes_total()
            + self.kv_cache_bytes(kv_capacity)
        )

    @classmethod
    def from_config(cls, config: ModelConfig, **fields) -> ModelShape:
        """A shape for any config; unstated sparsity defaults to an assumed 10% active."""
        fields.setdefault("name", "custom")
        fields.setdefault("active_fraction", (0.1,) * config.num_layers)
        fields.setdefault(
            "sources", {"active_fraction": "assumed: 10% active (no figure for this config)"}
        )
        return cls(config=config, **fields)


# -- built-in shapes ---------------------------------------------------------------------------
_CALIBRATED_SKEW = (
    "calibrated: 1.8 is the Zipf exponent at which an LRU cache of 50% of the units hits ~95% "
    "of requests (95.1% simulated, 14336 units, 10% density, reuse 0.15), the hit rate of the "
    f"paper's Bamboo-7B ablation (+ neuron cache, 95%); an inference, not a paper figure ({PAPER})"
)
_MIXTRAL_SKEW = (
    "calibrated: 2.4 is the Zipf exponent at which PowerInfer-2 on the OnePlus 12 with all 19 "
    "GB (segmented cache, 47% of the FFN's units) misses 3.6% of the requested units over tokens "
    "96-192 of a simulated 192-token run (2.3: 4.0%, 2.5: 3.2%; the dense shapes' 1.8: ~7%), "
    "the paper's mean miss rate for TurboSparse-Mixtral-47B there (3.5%, P99 18.9%); an "
    f"inference from the cache figure, not from a speed ({PAPER})"
)
_FITTED_REUSE = (
    "calibrated: pi2lab.plan.traces.trace_stats on data/traces/pydoc-drelu.npz (bundled tiny "
    "dReLU model, 1024 neurons) gives 0.08-0.22 per layer (median ~0.14); fit_synthetic's "
    "LRU-curve grid fit there picks reuse 0.0, skew 0.75; a small model's figure, not a 7B one"
)
_STORAGE = (
    "int4, f16 scale per 32 elements (the paper's 2.7 GB of Mixtral-47B FFN scales = 45.1B "
    "weights x 2 B / 32; pi2lab's and llama.cpp's Q4_0 block), scales resident; 6 KiB bundle "
    f"read as 8 KiB at D=4096, cf. PowerInfer-2's 8 KB padded read ({PAPER})"
)
_PREDICTOR = (
    "inferred: rank 256 f16 per FFN (per expert); the paper's 2.6 GB of Mixtral-47B predictors "
    "over 32 x 8 experts x (4096 + 14336) x 2 bytes gives r ~ 276 "
    f"({PAPER}, memory budget breakdown)"
)


def _shape(name, config, inactive, source, **extra) -> ModelShape:
    return ModelShape(
        name=name,
        config=config,
        active_fraction=(round(1.0 - inactive, 6),) * config.num_layers,
        sources={
            "active_fraction": source,
            "skew": _CALIBRATED_SKEW,
            "reuse": _FITTED_REUSE,
            "dtype": _STORAGE,
            "predictor_rank": _PREDICTOR,
            **extra.pop("sources", {}),
        },
        **extra,
    )


def _builtin() -> dict[str, ModelShape]:
    relu_assumed = (
        "assumed: ~90% inactive per token, similar to ReLU-fied Llama reports; the papers "
        f"give no ReluLLaMA figure ({PAPER})"
    )
    shapes = [
        _shape(
            "llama-7b",
            ModelConfig.llama2_7b(),
            0.90,
            relu_assumed,
            sources={"config": "ReluLLaMA-7B = Llama-2-7B shapes (ModelConfig.llama2_7b)"},
        ),
        _shape(
            "llama-13b",
            ModelConfig.llama2_7b(
                hidden_size=5120,
                intermediate_size=13824,
                num_layers=40,
                num_heads=40,
                num_kv_heads=40,
            ),
            0.90,
            relu_assumed,
            sources={
                "config": "ReluLLaMA-13B = Llama-2-13B shapes (hidden 5120, FFN 13824, 40 layers)"
            },
        ),
        _shape(
            "turbosparse-mistral-7b",
            ModelConfig.bamboo_7b(vocab_size=32064),
            0.90,
            f"TurboSparse: Mistral ~90% of FFN neurons inactive per token ({PAPER}, Sparsity)",
            sources={
                "config": "Mistral shape: hidden 4096, FFN 14336, 32 layers, 32/8 heads, vocab "
                f"32064 ({PAPER})"
            },
        ),
        _shape(
            "bamboo-7b",
            ModelConfig.bamboo_7b(),
            0.90,
            "assumed: ~90% inactive, as TurboSparse-Mistral (same Mistral base, dReLU); the "
            f"the papers give no Bamboo figure ({PAPER})",
            sources={"config": "Bamboo-7B: Mistral-7B shapes, dReLU (ModelConfig.bamboo_7b)"},
        ),
        _shape(
            "turbosparse-mixtral-47b",
            ModelConfig.mixtral_8x7b(),
            0.85,
            "TurboSparse: Mixtral ~85% of each expert's neurons inactive, ~3% of MoE parameters "
            f"active per token (2 of 8 experts x 15% = 3.75%) ({PAPER}, Sparsity)",
            skew=2.4,
            sources={
                "config": "Mixtral-8x7B shapes, top-2 of 8 (ModelConfig.mixtral_8x7b)",
                "skew": _MIXTRAL_SKEW,
            },
        ),
    ]
    return {s.name: s for s in shapes}


SHAPES: dict[str, ModelShape] = _builtin()


def get_shape(name: str) -> ModelShape:
    """The built-in shape ``name``; :class:`~pi2lab.errors.ConfigError` names the valid ones."""
    try:
        return SHAPES[name]
    except KeyError:
        raise ConfigError(
            f"unknown model shape {name!r}: expected one of {', '.join(SHAPES)}"
        ) from None
