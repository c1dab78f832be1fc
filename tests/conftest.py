"""Shared fixtures: tiny random checkpoints written by Hugging Face transformers.

Every axis has its own size (hidden 48, heads 6, kv heads 2, head dim 10, FFN 56, vocab 97,
layers 3) so a swapped axis cannot pass.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import numpy as np
import pytest

TINY = dict(
    vocab_size=97,
    hidden_size=48,
    intermediate_size=56,
    num_hidden_layers=3,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=10,
    max_position_embeddings=64,
)

HF_CASES = {
    "llama-silu": ("LlamaConfig", "LlamaForCausalLM", dict(hidden_act="silu")),
    "llama-relu": ("LlamaConfig", "LlamaForCausalLM", dict(hidden_act="relu", rope_theta=500.0)),
    "mistral-window": (
        "MistralConfig",
        "MistralForCausalLM",
        dict(hidden_act="silu", sliding_window=5),
    ),
    "mixtral-relu": (
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(hidden_act="relu", num_local_experts=4, num_experts_per_tok=2),
    ),
}


def tiny_config(**overrides):
    """A tiny dReLU config with a different size on every axis; ``overrides`` change fields."""
    import pi2lab as pl

    base = dict(
        architecture="bamboo",
        ffn_activation="drelu",
        vocab_size=97,
        hidden_size=48,
        intermediate_size=56,
        num_layers=2,
        num_heads=6,
        num_kv_heads=2,
        head_dim=10,
        max_position_embeddings=64,
    )
    return pl.ModelConfig(**{**base, **overrides})


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """``{case: (directory, torch model)}`` for the HF_CASES, seeded and saved once."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = {}
    for i, (name, (cfg_cls, model_cls, extra)) in enumerate(HF_CASES.items()):
        torch.manual_seed(i)
        cfg = getattr(transformers, cfg_cls)(**TINY, **extra)
        model = getattr(transformers, model_cls)(cfg).eval()
        with torch.no_grad():  # default init is tiny; widen it so every path matters
            for p in model.parameters():
                if p.ndim > 1:
                    p.normal_(0.0, 0.2)
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        out[name] = (path, model)
    return out


@pytest.fixture
def rng():
    return np.random.default_rng(0)
