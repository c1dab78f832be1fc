"""Offload from int8/int4 flash layouts: the engine holds its resident matrices in the bundles'
format, computes the quantized units where they were read (native kernels), and gives the
logits of in-memory sparse decode on the same quantized weights; the NumPy path (dequantized
copies, where the kernels are not built) gives the same tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pi2lab as pl
from pi2lab.convert import convert
from pi2lab.engine.offload import OffloadConfig, OffloadEngine
from pi2lab.engine.sparse import SparseDecoder
from pi2lab.ffi import native_built
from pi2lab.kernels.sparse_plan import SparsePlan
from pi2lab.model.params import quantize_params
from pi2lab.pipeline import scheduler
from pi2lab.quant import ops
from tests.conftest import tiny_config
from tests.engine.test_offload import PLAN, PROMPT, random_predictors

CFG = tiny_config(
    intermediate_size=64, num_layers=3, hidden_size=64, head_dim=16, num_heads=4, num_kv_heads=2
)


@pytest.fixture(scope="module", params=["int8", "int4"])
def flash(request, tmp_path_factory):
    kind = request.param
    model = pl.Model(config=CFG, params=pl.init_params(CFG, jax.random.key(7), std=0.25))
    plan = SparsePlan.uniform(CFG, **PLAN)
    preds = random_predictors(CFG, jax.random.key(8))
    out = tmp_path_factory.mktemp(kind) / "flash"
    params = jax.tree.map(np.asarray, model.params)
    convert(CFG, params, out, dtype=kind, cluster_size=4, predictors=preds, plan=plan)
    sparse = SparseDecoder(plan=plan, predictors=preds)
    # in memory: the whole model quantized (the engine quantizes its resident matrices like
    # the bundles, whose rows are the sparse layout's quantized rows)
    return quantize_params(sparse.layout(model.params), kind), sparse, out


def test_logits_match_in_memory_sparse_decode_on_the_same_weights(flash):
    params, sparse, path = flash
    knobs, key = pl.SamplingKnobs.make(), jax.random.key(0)
    with OffloadEngine(path, OffloadConfig(memory_budget=0.4)) as eng:
        tok = eng.prefill(PROMPT, key, knobs, capacity=64)
        cache = pl.KVCache.zeros(CFG, 64)
        from pi2lab.engine.prefill import pad, prefill

        # the engine's prefill streams the FFN through NumPy in float32 (dequantized rows)
        ffn_floats = [
            {k: ops.dequantize(w) if k.startswith(("hot_", "cold_")) else w for k, w in p.items()}
            for p in params["layers"]
        ]
        _, cache = prefill(
            {**params, "layers": ffn_floats}, CFG, pad(PROMPT, 16), jnp.int32(6), cache
        )
        ref_tok = jnp.int32(tok)
        for pos in range(6, 14):
            tok, logits = eng.step(tok, pos, key, knobs)
            ref_tok, ref_logits, cache = sparse.step(
                params, CFG, cache, ref_tok, jnp.int32(pos), key, knobs
            )
            np.testing.assert_allclose(logits, ref_logits, atol=2e-3)
            assert int(tok) == int(ref_tok)


@pytest.mark.skipif(not native_built(), reason="native kernels not built")
def test_numpy_path_gives_the_same_tokens(flash, monkeypatch):
    _, _, path = flash

    def run():
        with OffloadEngine(path, OffloadConfig(memory_budget=0.3)) as eng:
            return pl.generate(
                eng, PROMPT, max_new_tokens=12, engine="powerinfer2", stop_at_eos=False
            ).tokens

    native = run()
    monkeypatch.setattr(scheduler, "native_built", lambda: False)
    np.testing.assert_array_equal(run(), native)
