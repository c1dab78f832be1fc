"""dReLU and FATReLU models (absent from transformers) against an independent numpy decoder."""

import dataclasses

import jax
import numpy as np
import pytest

import pi2lab as pl
from tests.conftest import tiny_config
from tests.reference_numpy import logits as numpy_logits

BASE = dict(num_layers=3, rope_theta=300.0)


@pytest.mark.parametrize(
    ("architecture", "activation", "threshold"),
    [
        ("bamboo", "drelu", 0.0),
        ("llama", "fatrelu", 0.15),
        ("llama", "relu", 0.0),
    ],
)
def test_matches_numpy_reference(tmp_path, architecture, activation, threshold, rng):
    cfg = tiny_config(
        architecture=architecture, ffn_activation=activation, activation_threshold=threshold, **BASE
    )
    params = pl.init_params(cfg, jax.random.key(1), std=0.2)
    pl.save_pretrained(pl.Model(config=cfg, params=params), tmp_path / "m")
    model = pl.load_pretrained(tmp_path / "m")
    assert model.config == cfg
    tokens = rng.integers(0, cfg.vocab_size, 11)
    ref = numpy_logits(tmp_path / "m", tokens, activation)
    np.testing.assert_allclose(np.asarray(pl.dense_logits(model, tokens)), ref, atol=1e-4)


def test_activations_are_sparse_where_they_should_be(rng):
    cfg = tiny_config(**BASE)
    model = pl.Model(config=cfg, params=pl.init_params(cfg, jax.random.key(2), std=0.2))
    acts = pl.ffn_activations(model, rng.integers(0, cfg.vocab_size, 9))
    assert len(acts) == cfg.num_layers and acts[0].shape == (9, cfg.intermediate_size)
    frac_zero = float(np.mean([np.mean(np.asarray(a) == 0) for a in acts]))
    assert 0.6 < frac_zero < 0.9  # dReLU on random weights: ~3/4 of neurons are zero
    silu = pl.Model(
        config=dataclasses.replace(cfg, architecture="llama", ffn_activation="silu"),
        params=model.params,
    )
    assert all(
        np.mean(np.asarray(a) == 0) < 0.01 for a in pl.ffn_activations(silu, rng.integers(0, 97, 9))
    )
