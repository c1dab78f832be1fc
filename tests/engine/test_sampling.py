"""Sampling knobs: greedy, temperature, top-k, top-p, seeds."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pi2lab as pl
from pi2lab.engine.sampling import SamplingKnobs, sample

LOGITS = jnp.asarray(np.random.default_rng(0).normal(size=50) * 3, jnp.float32)


def draws(knobs, n=300):
    keys = jax.random.split(jax.random.key(1), n)
    return np.asarray(jax.vmap(lambda k: sample(LOGITS, k, knobs))(keys))


def test_greedy_is_argmax():
    assert set(draws(SamplingKnobs.make(temperature=0.0))) == {int(jnp.argmax(LOGITS))}


def test_top_k_limits_support():
    got = set(draws(SamplingKnobs.make(temperature=1.5, top_k=3)))
    assert got <= set(np.argsort(-np.asarray(LOGITS))[:3].tolist()) and len(got) > 1


def test_top_p_keeps_smallest_nucleus():
    probs = np.asarray(jax.nn.softmax(LOGITS))
    order = np.argsort(-probs)
    nucleus = order[: int(np.searchsorted(np.cumsum(probs[order]), 0.8) + 1)]
    got = set(draws(SamplingKnobs.make(temperature=1.0, top_p=0.8)))
    assert got <= set(nucleus.tolist())


@settings(max_examples=25, deadline=None)
@given(temperature=st.floats(0.1, 3.0), top_k=st.integers(0, 60), top_p=st.floats(0.05, 1.0))
def test_sample_always_in_range_and_in_top_k(temperature, top_k, top_p):
    tok = int(sample(LOGITS, jax.random.key(3), SamplingKnobs.make(temperature, top_k, top_p)))
    assert 0 <= tok < LOGITS.size
    if top_k:
        assert tok in np.argsort(-np.asarray(LOGITS))[:top_k]


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"temperature": -1.0}, "temperature=-1.0: expected a finite number >= 0"),
        ({"temperature": float("nan")}, "temperature=nan"),
        ({"temperature": float("inf")}, "temperature=inf"),
        ({"top_k": -1}, "top_k=-1: expected an integer >= 0"),
        ({"top_p": 0.0}, "top_p=0.0: expected 0 < top_p <= 1"),
        ({"top_p": 2.0}, "top_p=2.0: expected 0 < top_p <= 1"),
        ({"top_p": float("nan")}, "top_p=nan"),
    ],
)
def test_bad_knobs_name_the_value_and_the_range(knobs, message):
    with pytest.raises(pl.ConfigError, match=re.escape(message)):
        SamplingKnobs.make(**knobs)
