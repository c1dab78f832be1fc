"""Logits match Hugging Face transformers on the same tiny random checkpoints (float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pi2lab as pl
from pi2lab.engine.decode import decode_step
from pi2lab.engine.prefill import pad, prefill
from pi2lab.engine.sampling import SamplingKnobs
from tests.conftest import HF_CASES

TOL = 1e-4
SEQ = 13  # longer than the Mistral case's sliding window of 5


def _hf_logits(torch_model, tokens):
    import torch

    with torch.no_grad():
        return torch_model(torch.as_tensor(tokens[None], dtype=torch.long)).logits[0].numpy()


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_prefill_logits_match(hf_checkpoints, case, rng):
    path, torch_model = hf_checkpoints[case]
    model = pl.load_pretrained(path)
    tokens = rng.integers(0, model.config.vocab_size, SEQ).astype(np.int32)
    ref = _hf_logits(torch_model, tokens)
    ours = np.asarray(pl.dense_logits(model, tokens))
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= TOL


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_token_by_token_decode_matches(hf_checkpoints, case, rng):
    """Prefill 4 tokens into the KV cache, then feed the rest one at a time."""
    path, torch_model = hf_checkpoints[case]
    model = pl.load_pretrained(path)
    cfg = model.config
    tokens = rng.integers(0, cfg.vocab_size, SEQ).astype(np.int32)
    ref = _hf_logits(torch_model, tokens)
    cache = pl.KVCache.zeros(cfg, capacity=32)
    logits, cache = prefill(model.params, cfg, pad(tokens[:4], 16), jnp.int32(4), cache)
    got = [np.asarray(logits)]
    knobs, key = SamplingKnobs.make(), jax.random.key(0)
    for pos in range(4, SEQ - 1):
        _, logits, cache = decode_step(
            model.params, cfg, cache, jnp.int32(tokens[pos]), jnp.int32(pos), key, knobs
        )
        got.append(np.asarray(logits))
    assert np.abs(np.stack(got) - ref[3 : SEQ - 1]).max() <= TOL


def test_greedy_generation_matches_hf(hf_checkpoints):
    import torch

    path, torch_model = hf_checkpoints["llama-relu"]
    model = pl.load_pretrained(path)
    prompt = np.array([5, 17, 3, 88, 41], np.int32)
    with torch.no_grad():
        hf = torch_model.generate(
            torch.as_tensor(prompt[None], dtype=torch.long),
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(prompt) :].numpy()
    ours = pl.generate(model, prompt, max_new_tokens=8, stop_at_eos=False).tokens
    np.testing.assert_array_equal(ours, hf)


def test_hf_config_maps_to_ours(hf_checkpoints):
    cfgs = {name: pl.load_pretrained(path).config for name, (path, _) in hf_checkpoints.items()}
    assert cfgs["llama-relu"].ffn_activation == "relu"
    assert cfgs["llama-silu"].ffn_activation == "silu"
    assert cfgs["mistral-window"].sliding_window == 5
    assert cfgs["mixtral-relu"].num_experts == 4
    assert cfgs["mixtral-relu"].num_experts_per_tok == 2
    assert cfgs["llama-silu"].head_dim == 10
