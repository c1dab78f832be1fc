"""pi2lab: reproduce and extend PowerInfer-2 (sparse, offloaded LLM decoding) on JAX.

``import pi2lab as pl``; ``model = pl.load_pretrained("builtin")``;
``pl.generate(model, "...")``.

The names below are imported on first use, so that importing a part that needs no JAX (the
flash layout reader, the CLI's argument parser) does not import JAX through this package.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "BudgetError": "pi2lab.errors",
    "CheckpointError": "pi2lab.errors",
    "ConfigError": "pi2lab.errors",
    "GenerationResult": "pi2lab.engine.generate",
    "KVCache": "pi2lab.model.kv_cache",
    "MissingExtraError": "pi2lab.errors",
    "Model": "pi2lab.model.pretrained",
    "ModelConfig": "pi2lab.config",
    "Pi2labError": "pi2lab.errors",
    "PromptError": "pi2lab.errors",
    "RopeScaling": "pi2lab.config",
    "SamplingKnobs": "pi2lab.engine.sampling",
    "StorageError": "pi2lab.errors",
    "TrainingError": "pi2lab.errors",
    "activation_sparsity": "pi2lab.predict.profile",
    "dense_logits": "pi2lab.engine.prefill",
    "ffn_activations": "pi2lab.engine.prefill",
    "generate": "pi2lab.engine.generate",
    "init_params": "pi2lab.model.params",
    "load_pretrained": "pi2lab.model.pretrained",
    "save_pretrained": "pi2lab.model.pretrained",
}


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'pi2lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES})


__all__ = sorted(_NAMES)
