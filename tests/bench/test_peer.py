"""llama.cpp and pi2lab on the same weights: the GGUF export gives llama.cpp the same model
(next-token logits agree), and without the peer extra the bench says how to install it."""

import builtins

import jax
import numpy as np
import pytest

import pi2lab as pl
from pi2lab import cli
from tests.conftest import tiny_config

# llama.cpp needs room for its special and byte tokens in the vocabulary
CFG = tiny_config(architecture="llama", ffn_activation="silu", vocab_size=300)


def test_bench_peer_without_the_extra_says_how_to_install(monkeypatch, capsys):
    real = builtins.__import__

    def without_peer(name, *args, **kwargs):
        if name.split(".")[0] in ("llama_cpp", "gguf"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_peer)
    assert cli.main(["bench", "peer", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -e '.[peer]'" in err


def test_gguf_export_refuses_what_llama_cpp_computes_differently(tmp_path):
    pytest.importorskip("gguf")
    from pi2lab.model.gguf import write_gguf

    relu = tiny_config(architecture="llama", ffn_activation="relu", vocab_size=300)
    params = pl.init_params(relu, jax.random.key(0))
    with pytest.raises(pl.ConfigError, match="SiLU"):
        write_gguf(params, relu, tmp_path / "relu.gguf")
    assert not (tmp_path / "relu.gguf").exists()
    write_gguf(params, relu, tmp_path / "relu.gguf", speed_only=True)  # timing runs only
    moe = tiny_config(architecture="mixtral", num_experts=2, num_experts_per_tok=1, vocab_size=300)
    with pytest.raises(pl.ConfigError, match="experts"):
        write_gguf(pl.init_params(moe, jax.random.key(0)), moe, tmp_path / "moe.gguf")


@pytest.mark.parametrize("tied", [False, True])
def test_llama_cpp_and_pi2lab_agree_on_next_token_logits(tmp_path, tied):
    pytest.importorskip("llama_cpp")
    from pi2lab.bench.peer import llama_logits, open_llama
    from pi2lab.model.gguf import write_gguf

    cfg = tiny_config(
        architecture="llama", ffn_activation="silu", vocab_size=300, tie_word_embeddings=tied
    )
    model = pl.Model(config=cfg, params=pl.init_params(cfg, jax.random.key(1), std=0.2))
    path = write_gguf(model.params, cfg, tmp_path / "tiny.gguf")
    tokens = np.random.default_rng(0).integers(3, 300, 12).astype(np.int32)
    got = llama_logits(open_llama(path, n_ctx=32, logits_all=True), tokens)
    want = np.asarray(pl.dense_logits(model, tokens))
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert (got.argmax(-1) == want.argmax(-1)).all()


def test_sparse_rows_sit_beside_their_bytes_bound():
    from pi2lab.bench import format_table
    from pi2lab.bench.peer import _sparse_vs_dense

    engines = {}
    for tag, dense_mb in (("f32", 800.0), ("int8", 212.5), ("int4", 112.5)):
        engines[f"pi2lab dense {tag}"] = {"tokens_per_s": 10.0, "weight_mb_per_token": dense_mb}
        engines[f"pi2lab sparse {tag} (10%)"] = {
            "tokens_per_s": 25.0,
            "weight_mb_per_token": dense_mb / 4,
        }
    rows = _sparse_vs_dense(engines)
    assert set(rows) == {"f32", "int8", "int4"}
    for r in rows.values():  # 2.5x measured against a 4x bound
        assert r == {"speedup": 2.5, "bytes_bound_speedup": 4.0, "fraction_of_bound": 0.625}
    row = {"shape": "s", "note": "n", "engines": {}, "ratios": {}, "sparse_vs_dense": rows}
    text = format_table({"bench": "peer", "machine": {"backend": "cpu", "jax": "-"}, "m": row})
    assert "sparse int4 (10%) / dense int4: 2.50x, bytes bound 4.00x (62% of bound)" in text
