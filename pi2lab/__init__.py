"""pi2lab: reproduce and extend PowerInfer-2 (sparse, offloaded LLM decoding) on JAX.

``import pi2lab as pl``; ``model = pl.load_pretrained("builtin")``; ``model.generate("...")``.
"""

from pi2lab.config import ModelConfig, RopeScaling
from pi2lab.engine.generate import GenerationResult, generate
from pi2lab.engine.prefill import dense_logits, ffn_activations
from pi2lab.engine.sampling import SamplingKnobs
from pi2lab.engine.state import KVCache
from pi2lab.errors import (
    BudgetError,
    CheckpointError,
    ConfigError,
    MissingExtraError,
    Pi2labError,
    PromptError,
    StorageError,
    TrainingError,
)
from pi2lab.model.params import init_params
from pi2lab.model.pretrained import Model, load_pretrained, save_pretrained
from pi2lab.predict.profile import activation_sparsity

__all__ = [
    "BudgetError",
    "CheckpointError",
    "ConfigError",
    "GenerationResult",
    "KVCache",
    "MissingExtraError",
    "Model",
    "ModelConfig",
    "Pi2labError",
    "PromptError",
    "RopeScaling",
    "SamplingKnobs",
    "StorageError",
    "TrainingError",
    "activation_sparsity",
    "dense_logits",
    "ffn_activations",
    "generate",
    "init_params",
    "load_pretrained",
    "save_pretrained",
]
