"""Quantized models end to end: every projection computes what its dequantized float weights
compute (up to the activations' int8 rounding), dense and sparse decode agree, quantized
checkpoints load back as saved, the bundled model keeps its perplexity, and bad inputs are
named."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

import pi2lab as pl
from pi2lab.engine.sparse import SparseDecoder
from pi2lab.errors import CheckpointError, ConfigError
from pi2lab.model.params import init_params, quantize_params
from pi2lab.model.pretrained import Model, load_pretrained, save_pretrained
from pi2lab.predict.fidelity import quantization_fidelity
from pi2lab.quant import ops
from pi2lab.train.corpus import corpus_sequences
from tests.conftest import tiny_config

SHAPES = dict(hidden_size=64, intermediate_size=96, num_heads=4, num_kv_heads=2, head_dim=16)
CONFIGS = {
    "dense": tiny_config(**SHAPES),
    "moe": tiny_config(architecture="mixtral", num_experts=3, num_experts_per_tok=2, **SHAPES),
    "untied": tiny_config(tie_word_embeddings=False, **SHAPES),
}


def dequantized(params: dict, cfg) -> dict:
    """The float params a quantized tree stands for, back in the internal layout."""
    d, h, g, k = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    deq = lambda w: np.asarray(ops.dequantize(w))
    out = {**params, "embed": deq(params["embed"])}
    if "lm_head" in params:
        out["lm_head"] = deq(params["lm_head"])
    layers = []
    for p in params["layers"]:
        new = dict(p)
        new["q"] = deq(p["q"]).T.reshape(d, h, k)
        new["k"] = deq(p["k"]).T.reshape(d, g, k)
        new["v"] = deq(p["v"]).T.reshape(d, g, k)
        new["o"] = deq(p["o"]).T.reshape(h, k, d)
        for name in ("gate", "up", "down"):
            new[name] = deq(p[name])
        layers.append(new)
    return jax.tree.map(jnp.asarray, {**out, "layers": layers})


def model(name: str, kind: str | None = None) -> Model:
    cfg = CONFIGS[name]
    params = init_params(cfg, jax.random.key(3), std=0.2)
    return Model(cfg, quantize_params(params, kind) if kind else params)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_quantized_forward_is_its_dequantized_float_model(name, kind):
    q = model(name, kind)
    ref = Model(q.config, dequantized(q.params, q.config))
    tokens = np.arange(1, 13, dtype=np.int32)[None] % q.config.vocab_size
    got, want = np.asarray(pl.dense_logits(q, tokens)), np.asarray(pl.dense_logits(ref, tokens))
    # only the activations' int8 rounding (1/254 of each block's range) separates them
    assert np.abs(got - want).max() < 0.03 * np.abs(want).max()


@pytest.mark.parametrize("name", ["dense", "moe"])
@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_sparse_decode_with_every_neuron_reproduces_quantized_dense(name, kind):
    f = model(name)
    oracle = SparseDecoder.oracle(f.config)
    # quantized in the sparse layout (down one neuron per row), which dense decode reads too
    q = Model(f.config, quantize_params(oracle.layout(f.params), kind))
    dense = pl.generate(q, np.array([1, 5, 9], np.int32), max_new_tokens=8, stop_at_eos=False)
    sparse = pl.generate(
        q,
        np.array([1, 5, 9], np.int32),
        max_new_tokens=8,
        stop_at_eos=False,
        engine="sparse",
        sparse=oracle,
    )
    np.testing.assert_array_equal(sparse.tokens, dense.tokens)


@pytest.mark.parametrize("kind", ["int8", "int4"])
@pytest.mark.parametrize("name", ["untied", "moe", "sparse"])
def test_quantized_checkpoint_loads_back_as_saved(kind, name, tmp_path):
    if name == "sparse":  # down one neuron per row (saved as its transpose's rows)
        f = model("dense")
        q = Model(f.config, quantize_params(SparseDecoder.oracle(f.config).layout(f.params), kind))
    else:
        q = model(name, kind)
    save_pretrained(q, tmp_path / "m")
    back = load_pretrained(tmp_path / "m")
    assert back.weights == kind
    tokens = np.array([[3, 1, 4, 1, 5]], np.int32)
    np.testing.assert_array_equal(
        np.asarray(pl.dense_logits(back, tokens)), np.asarray(pl.dense_logits(q, tokens))
    )
    assert load_pretrained(tmp_path / "m", weights=kind).weights == kind
    with pytest.raises(ConfigError, match=f"holds {kind} weights"):
        load_pretrained(tmp_path / "m", weights="int8" if kind == "int4" else "int4")


def test_bad_quantized_checkpoints_name_the_tensor(tmp_path):
    q = model("dense", "int8")
    save_pretrained(q, tmp_path / "m")
    file = tmp_path / "m" / "model.safetensors"
    tensors = safetensors.numpy.load_file(str(file))
    name = "model.layers.1.mlp.up_proj.weight.scales"
    missing = {k: v for k, v in tensors.items() if k != name}
    safetensors.numpy.save_file(missing, str(file))
    with pytest.raises(CheckpointError, match=f"{name}.*missing.*float16 scales"):
        load_pretrained(tmp_path / "m")
    safetensors.numpy.save_file({**tensors, name: tensors[name][:, :1]}, str(file))
    with pytest.raises(CheckpointError, match=f"{name}.*shape \\[96, 1\\].*\\[96, 2\\]"):
        load_pretrained(tmp_path / "m")
    bad = tensors[name].astype(np.float32)
    safetensors.numpy.save_file({**tensors, name: bad}, str(file))
    with pytest.raises(CheckpointError, match="float16 scales"):
        load_pretrained(tmp_path / "m")


def test_bad_quantization_requests():
    with pytest.raises(ConfigError, match="int3"):
        load_pretrained("builtin", weights="int3")
    odd = init_params(tiny_config(), jax.random.key(0))  # hidden 48: not a multiple of 32
    with pytest.raises(ConfigError, match="embed.*blocks of 32"):
        quantize_params(odd, "int8")
    q = quantize_params(init_params(CONFIGS["dense"], jax.random.key(0)), "int8")
    assert quantize_params(q, "int8") is q
    with pytest.raises(ConfigError, match="already int8"):
        quantize_params(q, "int4")


def test_astype_keeps_quantized_weights():
    q = model("dense", "int4")
    half = q.astype(jnp.bfloat16)
    assert half.weights == "int4" and half.dtype == jnp.bfloat16
    assert half.params["layers"][0]["gate"] is q.params["layers"][0]["gate"]


def test_bundled_model_keeps_its_perplexity():
    """The issue's fidelity bounds: int8 within 0.5%, int4 within 5% (held-out text)."""
    m = load_pretrained("builtin")
    seqs = corpus_sequences(m, "held_out", 4, 96)
    kinds = {k: load_pretrained("builtin", weights=k) for k in ("int8", "int4")}
    fid = quantization_fidelity(m, kinds, seqs)
    assert abs(fid["int8"]["perplexity_increase"]) <= 0.005
    assert abs(fid["int4"]["perplexity_increase"]) <= 0.05
    assert fid["int8"]["greedy_agreement"] >= 0.95 and fid["int4"]["greedy_agreement"] >= 0.8


def test_quantized_model_reports_its_weights():
    q = dataclasses.replace(model("dense", "int8"))
    assert q.weights == "int8" and "QArray(int8" in repr(q.params["embed"])
