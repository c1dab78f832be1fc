"""generate: decode agrees with the dense forward, no retracing, seeds, bad prompts and knobs."""

import re

import jax
import numpy as np
import pytest

import pi2lab as pl
from pi2lab.engine.traces import TRACE_COUNTS
from tests.conftest import tiny_config

CFG = tiny_config(
    architecture="mistral", ffn_activation="relu", max_position_embeddings=200, sliding_window=7
)


@pytest.fixture(scope="module")
def model():
    return pl.Model(config=CFG, params=pl.init_params(CFG, jax.random.key(0), std=0.3))


def test_greedy_tokens_follow_dense_argmax(model):
    prompt = np.array([3, 14, 15, 92, 65, 35], np.int32)
    res = pl.generate(model, prompt, max_new_tokens=12)
    seq = np.concatenate([prompt, res.tokens])
    dense = np.asarray(pl.dense_logits(model, seq))
    np.testing.assert_array_equal(dense[len(prompt) - 1 : -1].argmax(-1), res.tokens)
    assert res.stop_reason == "length" and res.tokens.size == 12


def test_decode_step_does_not_retrace_across_steps_or_knobs(model):
    pl.generate(model, np.array([1, 2, 3]), max_new_tokens=5)  # compile once
    before = dict(TRACE_COUNTS)
    for temperature, top_k, top_p, seed in [
        (0.0, 0, 1.0, 0),
        (0.7, 5, 0.9, 1),
        (1.3, 0, 0.5, 2),
        (0.2, 40, 1.0, 3),
    ]:
        pl.generate(
            model,
            np.array([4, 5, 6, 7]),
            max_new_tokens=9,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
        )
    assert TRACE_COUNTS["decode_step"] == before["decode_step"]
    assert TRACE_COUNTS["sample_first"] == before["sample_first"]
    assert TRACE_COUNTS["prefill"] == before["prefill"]  # same length bucket


def test_prefill_buckets_prompt_lengths(model):
    pl.generate(model, np.arange(1, 4), max_new_tokens=2)
    before = TRACE_COUNTS["prefill"]
    for n in (5, 9, 13, 16):  # all in the 16 bucket
        pl.generate(model, np.arange(1, n + 1), max_new_tokens=2)
    assert TRACE_COUNTS["prefill"] == before


def test_seed_reproducible_and_varies(model):
    a = pl.generate(model, np.array([7, 8]), max_new_tokens=10, temperature=1.0, seed=11).tokens
    b = pl.generate(model, np.array([7, 8]), max_new_tokens=10, temperature=1.0, seed=11).tokens
    c = pl.generate(model, np.array([7, 8]), max_new_tokens=10, temperature=1.0, seed=12).tokens
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_stops_at_eos(model):
    first = int(pl.generate(model, np.array([9, 9, 9]), max_new_tokens=1).tokens[0])
    eos_model = pl.Model(
        config=pl.ModelConfig(**{**CFG.__dict__, "eos_token_id": (first,)}), params=model.params
    )
    res = pl.generate(eos_model, np.array([9, 9, 9]), max_new_tokens=10)
    assert res.stop_reason == "eos" and res.tokens.tolist() == [first]


def test_empty_prompt(model):
    with pytest.raises(pl.PromptError, match="empty"):
        pl.generate(model, np.array([], np.int32))


def test_prompt_longer_than_context(model):
    with pytest.raises(pl.PromptError, match="context"):
        pl.generate(model, np.ones(201, np.int32), max_new_tokens=1)
    with pytest.raises(pl.PromptError, match=r"190 tokens\) \+ max_new_tokens \(20\)"):
        pl.generate(model, np.ones(190, np.int32), max_new_tokens=20)


def test_token_ids_out_of_vocab(model):
    with pytest.raises(pl.PromptError, match=r"\[0, 97\)"):
        pl.generate(model, np.array([5, 97]))


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"temperature": -1.0}, "temperature=-1.0: expected a finite number >= 0"),
        ({"top_p": 2.0}, "top_p=2.0: expected 0 < top_p <= 1"),
        ({"top_k": -3}, "top_k=-3: expected an integer >= 0"),
    ],
)
def test_bad_sampling_knobs_are_a_config_error(model, knobs, message):
    with pytest.raises(pl.ConfigError, match=re.escape(message)):
        pl.generate(model, np.array([1, 2, 3]), max_new_tokens=2, **knobs)
    # checked before an offload engine opens its layout (which does not exist here)
    with pytest.raises(pl.ConfigError, match=re.escape(message)):
        pl.generate("/nonexistent/flash", "hi", engine="powerinfer2", **knobs)


def test_unknown_engine_is_a_config_error(model):
    with pytest.raises(pl.ConfigError, match="engine='turbo': expected one of dense, sparse"):
        pl.generate(model, np.array([1, 2, 3]), engine="turbo")
