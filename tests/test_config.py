"""ModelConfig from Hugging Face config.json dicts."""

import dataclasses

import numpy as np
import pytest

import pi2lab as pl
from pi2lab.model.layers import rope_inv_freq

HF = {
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 100,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
}


def hf(**kw):
    return {**HF, **kw}


def test_architecture_decides_relu_versus_drelu():
    assert pl.ModelConfig.from_hf(hf(hidden_act="relu")).ffn_activation == "relu"
    bamboo = pl.ModelConfig.from_hf(hf(architectures=["BambooForCausalLM"], hidden_act="relu"))
    assert (bamboo.architecture, bamboo.ffn_activation) == ("bamboo", "drelu")
    fat = pl.ModelConfig.from_hf(hf(hidden_act="fatrelu", hidden_act_param=0.1))
    assert (fat.ffn_activation, fat.activation_threshold) == ("fatrelu", 0.1)


def test_config_field_overrides_activation():
    cfg = pl.ModelConfig.from_hf(hf(hidden_act="relu", ffn_activation="drelu"))
    assert cfg.ffn_activation == "drelu"
    assert pl.ModelConfig.from_hf(cfg.to_hf()) == cfg


@pytest.mark.parametrize(
    "cfg",
    [
        pl.ModelConfig.bamboo_7b(),
        pl.ModelConfig.mixtral_8x7b(),
        pl.ModelConfig.llama2_7b(),
        pl.ModelConfig.bamboo_7b(
            sliding_window=4096,
            tie_word_embeddings=True,
            rope_scaling=pl.RopeScaling(rope_type="llama3", factor=8.0),
        ),
    ],
)
def test_round_trip(cfg):
    assert pl.ModelConfig.from_hf(cfg.to_hf()) == cfg


def test_head_dim_and_kv_heads_default():
    cfg = pl.ModelConfig.from_hf({k: v for k, v in HF.items() if k != "num_key_value_heads"})
    assert (cfg.num_kv_heads, cfg.head_dim) == (4, 16)


def test_transformers5_rope_parameters():
    cfg = pl.ModelConfig.from_hf(
        hf(
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            }
        )
    )
    assert cfg.rope_theta == 500000.0 and cfg.rope_scaling.rope_type == "llama3"


def test_llama3_rope_scaling_bands():
    base = pl.ModelConfig.from_hf(hf(rope_theta=500000.0, head_dim=128, hidden_size=512))
    scaled = dataclasses.replace(base, rope_scaling=pl.RopeScaling(rope_type="llama3", factor=8.0))
    inv, inv_s = rope_inv_freq(base), rope_inv_freq(scaled)
    wavelen = 2 * np.pi / inv
    np.testing.assert_allclose(inv_s[wavelen < 8192 / 4], inv[wavelen < 8192 / 4])
    np.testing.assert_allclose(inv_s[wavelen > 8192], inv[wavelen > 8192] / 8.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (dict(architectures=["GPT2LMHeadModel"]), "unknown architecture 'GPT2LMHeadModel'"),
        (dict(architectures=[]), "'architectures' is missing"),
        (dict(hidden_act="gelu"), "hidden_act='gelu'"),
        (dict(num_key_value_heads=3), "not a multiple of num_kv_heads=3"),
        (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "'yarn' is not supported"),
        (dict(architectures=["BambooForCausalLM"], hidden_act="silu"), "hidden_act='silu'"),
    ],
)
def test_bad_configs_name_the_field(bad, message):
    with pytest.raises(pl.ConfigError, match=message.replace("(", r"\(")):
        pl.ModelConfig.from_hf(hf(**bad))


def test_missing_field():
    with pytest.raises(pl.ConfigError, match="'vocab_size' is missing"):
        pl.ModelConfig.from_hf({k: v for k, v in HF.items() if k != "vocab_size"})
