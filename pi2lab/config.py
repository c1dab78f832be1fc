"""Model configuration: a frozen dataclass built from a Hugging Face ``config.json``.

Shape letters used across pi2lab (einsum strings and ``# [..]`` comments):

  B batch, T query tokens, S key/value slots (cache capacity), D model width,
  H query heads, G key/value heads, R query heads per kv head (H = G * R),
  K head dim, F FFN neurons, E experts, V vocabulary, L layers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pi2lab.errors import ConfigError

Architecture = Literal["llama", "mistral", "mixtral", "bamboo"]
Activation = Literal["silu", "relu", "drelu", "fatrelu"]

HF_ARCHITECTURES: dict[str, Architecture] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "MixtralForCausalLM": "mixtral",
    "BambooForCausalLM": "bamboo",
}
_ARCH_TO_HF = {v: k for k, v in HF_ARCHITECTURES.items()}
_MODEL_TYPE = {"llama": "llama", "mistral": "mistral", "mixtral": "mixtral", "bamboo": "mistral"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """Llama-3 style frequency-dependent RoPE scaling (``rope_type: llama3``) or linear scaling.

    Attributes:
      rope_type: ``"llama3"`` or ``"linear"``.
      factor: Overall stretch of the context.
      low_freq_factor: Llama-3 only: wavelengths above ``original_max / low_freq_factor`` are
        divided by ``factor``.
      high_freq_factor: Llama-3 only: wavelengths below ``original_max / high_freq_factor``
        are kept.
      original_max_position_embeddings: Llama-3 only: the pre-training context.
    """

    rope_type: Literal["llama3", "linear"]
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape and behaviour of a decoder-only transformer.

    Attributes:
      architecture: Model family; decides weight names and, for ``bamboo``, dReLU.
      vocab_size: V, number of token ids.
      hidden_size: D, residual stream width.
      intermediate_size: F, FFN neurons per layer (per expert for MoE).
      num_layers: L, decoder layers.
      num_heads: H, query heads.
      num_kv_heads: G, key/value heads (GQA when G < H); must divide H.
      head_dim: K, width of one head.
      ffn_activation: ``silu`` = SiLU(gate)*up, ``relu`` = ReLU(gate)*up,
        ``drelu`` = ReLU(gate)*ReLU(up), ``fatrelu`` = gate kept above
        ``activation_threshold``, times up.
      activation_threshold: FATReLU threshold (``hidden_act_param`` in ProSparse configs).
      rms_norm_eps: RMSNorm epsilon.
      rope_theta: RoPE base.
      rope_scaling: Optional RoPE scaling.
      max_position_embeddings: Context length the model supports.
      sliding_window: If set, a query sees only the last ``sliding_window`` keys (itself included).
      num_experts: E; 0 for a dense FFN.
      num_experts_per_tok: Experts chosen per token (top-k) for MoE.
      tie_word_embeddings: Whether the LM head reuses the embedding matrix.
      bos_token_id: Token id prepended to prompts, if any.
      eos_token_id: Token ids that end generation.
    """

    architecture: Architecture = "llama"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_activation: Activation = "silu"
    activation_threshold: float = 0.0
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 2048
    sliding_window: int | None = None
    num_experts: int = 0
    num_experts_per_tok: int = 0
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()

    def __post_init__(self):
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"config field {name}={value!r}: expected a positive integer")
        if self.architecture not in _ARCH_TO_HF:
            raise ConfigError(
                f"config field architecture={self.architecture!r}: expected one of "
                f"{sorted(_ARCH_TO_HF)}"
            )
        if self.ffn_activation not in ("silu", "relu", "drelu", "fatrelu"):
            raise ConfigError(
                f"config field ffn_activation={self.ffn_activation!r}: expected "
                "silu, relu, drelu or fatrelu"
            )
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads={self.num_heads} is not a multiple of num_kv_heads={self.num_kv_heads}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head_dim={self.head_dim}: RoPE needs an even head dimension")
        if self.is_moe != (self.architecture == "mixtral"):
            raise ConfigError(
                f"architecture={self.architecture!r} with num_experts="
                f"{self.num_experts}: only mixtral has experts"
            )
        if self.is_moe and not 0 < self.num_experts_per_tok <= self.num_experts:
            raise ConfigError(
                f"num_experts_per_tok={self.num_experts_per_tok}: expected 1.."
                f"{self.num_experts} (num_experts)"
            )
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ConfigError(f"sliding_window={self.sliding_window}: expected a positive integer")

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_per_kv(self) -> int:
        return self.num_heads // self.num_kv_heads

    # --- Hugging Face config.json ------------------------------------------------------------

    @classmethod
    def from_hf(cls, hf: dict[str, Any], *, source: str = "config.json") -> ModelConfig:
        """Builds a config from a Hugging Face ``config.json`` dict.

        The architecture name decides ReLU*up against dReLU (``hidden_act: relu`` alone does not);
        a ``ffn_activation`` key (a pi2lab extension) overrides it.
        """
        archs = hf.get("architectures") or []
        if not archs:
            raise ConfigError(
                f"{source}: field 'architectures' is missing; expected one of "
                f"{sorted(HF_ARCHITECTURES)}"
            )
        if archs[0] not in HF_ARCHITECTURES:
            raise ConfigError(
                f"{source}: unknown architecture {archs[0]!r}; expected one of "
                f"{sorted(HF_ARCHITECTURES)}"
            )
        arch = HF_ARCHITECTURES[archs[0]]

        def need(key):
            if key not in hf:
                raise ConfigError(f"{source}: required field {key!r} is missing")
            return hf[key]

        hidden, heads = need("hidden_size"), need("num_attention_heads")
        rope = hf.get("rope_parameters") or {}  # transformers 5 keeps theta and scaling here
        act = hf.get("ffn_activation") or _activation_for(
            arch, hf.get("hidden_act", "silu"), source
        )
        eos = hf.get("eos_token_id")
        eos = () if eos is None else tuple(eos) if isinstance(eos, list) else (int(eos),)
        return cls(
            architecture=arch,
            vocab_size=need("vocab_size"),
            hidden_size=hidden,
            intermediate_size=need("intermediate_size"),
            num_layers=need("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hidden // heads,
            ffn_activation=act,
            activation_threshold=float(hf.get("hidden_act_param", 0.0)),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            rope_scaling=_rope_scaling(hf.get("rope_scaling") or rope, source),
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            sliding_window=hf.get("sliding_window") if arch != "llama" else None,
            num_experts=hf.get("num_local_experts", 0) if arch == "mixtral" else 0,
            num_experts_per_tok=hf.get("num_experts_per_tok", 0) if arch == "mixtral" else 0,
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=eos,
        )

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face ``config.json`` dict for this config (round-trips through from_hf)."""
        hidden_act = {"silu": "silu", "relu": "relu", "drelu": "relu", "fatrelu": "fatrelu"}
        hf: dict[str, Any] = {
            "architectures": [_ARCH_TO_HF[self.architecture]],
            "model_type": _MODEL_TYPE[self.architecture],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": hidden_act[self.ffn_activation],
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id),
        }
        if self.ffn_activation != _activation_for(self.architecture, hf["hidden_act"], ""):
            hf["ffn_activation"] = self.ffn_activation
        if self.ffn_activation == "fatrelu":
            hf["hidden_act_param"] = self.activation_threshold
        if self.rope_scaling is not None:
            hf["rope_scaling"] = dataclasses.asdict(self.rope_scaling)
        if self.architecture != "llama":
            hf["sliding_window"] = self.sliding_window
        if self.is_moe:
            hf["num_local_experts"] = self.num_experts
            hf["num_experts_per_tok"] = self.num_experts_per_tok
        return hf

    # --- presets -----------------------------------------------------------------------------

    @classmethod
    def llama2_7b(cls, **overrides) -> ModelConfig:
        """Llama-2-7B / ReluLLaMA-7B shapes (ReLU*up, as ReluLLaMA)."""
        return cls(
            **{
                **dict(
                    architecture="llama",
                    vocab_size=32000,
                    hidden_size=4096,
                    intermediate_size=11008,
                    num_layers=32,
                    num_heads=32,
                    num_kv_heads=32,
                    head_dim=128,
                    ffn_activation="relu",
                    max_position_embeddings=4096,
                    rms_norm_eps=1e-5,
                ),
                **overrides,
            }
        )

    @classmethod
    def bamboo_7b(cls, **overrides) -> ModelConfig:
        """Bamboo-7B / TurboSparse-Mistral-7B shapes (dReLU)."""
        return cls(
            **{
                **dict(
                    architecture="bamboo",
                    vocab_size=32000,
                    hidden_size=4096,
                    intermediate_size=14336,
                    num_layers=32,
                    num_heads=32,
                    num_kv_heads=8,
                    head_dim=128,
                    ffn_activation="drelu",
                    max_position_embeddings=4096,
                    rms_norm_eps=1e-5,
                ),
                **overrides,
            }
        )

    @classmethod
    def mixtral_8x7b(cls, **overrides) -> ModelConfig:
        """Mixtral-8x7B / TurboSparse-Mixtral-47B shapes (top-2 of 8; dReLU experts)."""
        return cls(
            **{
                **dict(
                    architecture="mixtral",
                    vocab_size=32000,
                    hidden_size=4096,
                    intermediate_size=14336,
                    num_layers=32,
                    num_heads=32,
                    num_kv_heads=8,
                    head_dim=128,
                    ffn_activation="drelu",
                    num_experts=8,
                    num_experts_per_tok=2,
                    max_position_embeddings=4096,
                    rms_norm_eps=1e-5,
                    rope_theta=1e6,
                ),
                **overrides,
            }
        )

    @classmethod
    def synthetic_7b(
        cls, *, num_layers: int = 4, intermediate_size: int = 11008, **overrides
    ) -> ModelConfig:
        """A few layers with Llama-7B layer shapes and a small vocabulary, for benchmarks."""
        return cls(
            **{
                **dict(
                    architecture="llama",
                    vocab_size=4096,
                    hidden_size=4096,
                    intermediate_size=intermediate_size,
                    num_layers=num_layers,
                    num_heads=32,
                    num_kv_heads=32,
                    head_dim=128,
                    ffn_activation="relu",
                    max_position_embeddings=2048,
                ),
                **overrides,
            }
        )


def _activation_for(arch: Architecture, hidden_act: str, source: str) -> Activation:
    if hidden_act == "fatrelu":
        return "fatrelu"
    if hidden_act == "relu":
        return "drelu" if arch == "bamboo" else "relu"
    if hidden_act == "silu" and arch != "bamboo":
        return "silu"
    raise ConfigError(
        f"{source}: hidden_act={hidden_act!r} is not supported for {arch}; "
        "expected silu, relu or fatrelu (relu for bamboo)"
    )


def _rope_scaling(spec: dict | None, source: str) -> RopeScaling | None:
    if not spec:
        return None
    kind = spec.get("rope_type", spec.get("type"))
    if kind in ("default", None):
        return None
    if kind not in ("llama3", "linear"):
        raise ConfigError(
            f"{source}: rope_scaling type {kind!r} is not supported; expected 'llama3' or 'linear'"
        )
    fields = {f.name for f in dataclasses.fields(RopeScaling)} - {"rope_type"}
    return RopeScaling(rope_type=kind, **{k: v for k, v in spec.items() if k in fields})
