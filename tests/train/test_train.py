"""Training code: tokenizer, baselines, and a short run of the real training loop."""

import dataclasses
import re

import numpy as np
import pytest

import pi2lab as pl
from pi2lab.train import baselines, corpus
from pi2lab.train.bundled import bundled_config, card_summary, model_card
from pi2lab.train.loop import TrainConfig, train
from pi2lab.train.tokenizer import BOS, EOS, encode_documents, train_bpe

TEXTS = [
    f"The function number {i} returns a list of {i % 7} items when called." for i in range(200)
]


def test_corpus_split_is_deterministic_and_disjoint():
    docs = corpus.stdlib_documents()
    assert len(docs) > 300 and sum(map(len, docs.values())) > 1_000_000
    train_docs, held = corpus.split_documents(docs)
    assert corpus.split_documents(docs) == (train_docs, held)
    assert held and not set(held) & set(train_docs)


def test_bpe_tokenizer_round_trips():
    tok = train_bpe(TEXTS, vocab_size=300)
    assert tok.token_to_id(BOS) == 0 and tok.token_to_id(EOS) == 1
    enc = tok.encode(TEXTS[3])
    assert tok.decode(enc.ids) == TEXTS[3]
    stream = encode_documents(tok, TEXTS[:2])
    assert stream.dtype == np.int32 and (stream == 1).sum() == 2


def test_bigram_beats_unigram_on_structured_text():
    seq = np.tile(np.arange(10, dtype=np.int32), 100)
    uni = baselines.unigram_perplexity(seq, seq, 10)
    bi, lam = baselines.bigram_perplexity(seq, seq, 10)
    assert uni == pytest.approx(10.0, rel=0.01)
    assert bi < 1.2 and lam > 0.9


def test_short_training_run_learns_and_steers_sparsity():
    tok = train_bpe(TEXTS, vocab_size=300)
    stream = encode_documents(tok, TEXTS)
    cfg = dataclasses.replace(
        bundled_config(tok.get_vocab_size()),
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        head_dim=16,
        max_position_embeddings=64,
    )
    tc = TrainConfig(
        seq_len=32,
        batch_size=8,
        steps=60,
        eval_every=20,
        eval_sequences=4,
        learning_rate=5e-3,
        l1_gain=0.5,
        target_sparsity=0.95,
    )
    params, history = train(cfg, tc, stream[:-200], stream[-200:])
    evals = [r for r in history if "held_out_perplexity" in r]
    assert evals[-1]["held_out_perplexity"] < evals[0]["held_out_perplexity"] < 300
    l1s = [r["l1"] for r in evals]
    assert l1s[-1] > l1s[0] > 0  # below target sparsity, the controller raises the penalty
    model = pl.Model(config=cfg, params=params, tokenizer=tok)
    assert pl.generate(model, "The function", max_new_tokens=4).tokens.size >= 1


def test_too_small_corpus_is_refused():
    with pytest.raises(pl.TrainingError, match="corpus too small"):
        train(bundled_config(), TrainConfig(), np.zeros(100, np.int32), np.zeros(10, np.int32))


def test_model_card_reports_figures():
    card = {
        "parameters": 123,
        "corpus": {
            "source": "src",
            "documents_train": 1,
            "documents_held_out": 1,
            "characters_train": 10,
            "characters_held_out": 5,
            "tokens_train": 4,
            "tokens_held_out": 2,
            "fingerprint": "abc",
        },
        "training": {
            "learning_rate": 1e-3,
            "weight_decay": 0.1,
            "warmup_fraction": 0.05,
            "batch_size": 2,
            "seq_len": 4,
            "steps_run": 3,
            "tokens_seen": 24,
            "epochs": 6.0,
            "train_seconds": 60.0,
            "machine": "x86_64",
            "target_sparsity": 0.9,
            "final_l1": 0.02,
            "time_budget_s": 60,
        },
        "held_out": {
            "tokens": 9,
            "perplexity": 12.5,
            "bigram_lambda": 0.5,
            "bigram_perplexity": 20.0,
            "unigram_perplexity": 40.0,
        },
        "sparsity": {
            "sparsity_per_layer": [0.9, 0.8],
            "dead_fraction_per_layer": [0.0, 0.1],
            "dead_on_train_per_layer": [0.0, 0.02],
            "train_tokens_checked": 99,
            "top10_share_per_layer": [0.3, 0.4],
        },
    }
    text = model_card(bundled_config(), card)
    assert "| this model | 12.5 |" in text and "| mean | 0.850 | 0.050 | 0.010 | 0.350 |" in text
    assert card_summary(card) == {**card["held_out"], "mean_sparsity": pytest.approx(0.85)}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"steps": 0}, "steps=0: expected an integer >= 1"),
        ({"seq_len": 0}, "seq_len=0"),
        ({"batch_size": -2}, "batch_size=-2"),
        ({"eval_every": 0}, "eval_every=0"),
        ({"learning_rate": 0.0}, "learning_rate=0.0: expected a finite number > 0"),
        ({"time_budget_s": float("nan")}, "time_budget_s=nan"),
        ({"warmup_fraction": 1.0}, "warmup_fraction=1.0: expected 0 <= warmup_fraction < 1"),
        ({"target_sparsity": 1.5}, "target_sparsity=1.5: expected 0 <= target_sparsity <= 1"),
        ({"weight_decay": -0.1}, "weight_decay=-0.1"),
    ],
)
def test_unusable_training_settings_are_refused(settings, message):
    with pytest.raises(pl.TrainingError, match=re.escape(message)):
        TrainConfig(**settings)


def test_corpus_sequences_are_consecutive_and_checked():
    model = pl.load_pretrained("builtin")
    seqs = corpus.corpus_sequences(model, "held_out", 3, 40)
    np.testing.assert_array_equal(
        np.concatenate(seqs), corpus.corpus_tokens(model, "held_out", 120)
    )
    assert [s.shape for s in seqs] == [(40,)] * 3
    with pytest.raises(pl.ConfigError, match="sequences=0"):
        corpus.corpus_sequences(model, "held_out", 0, 40)
    with pytest.raises(pl.ConfigError, match="length=1"):
        corpus.corpus_sequences(model, "held_out", 3, 1)
    with pytest.raises(pl.ConfigError, match="the held_out split has"):
        corpus.corpus_sequences(model, "held_out", 10**5, 1000)
    with pytest.raises(pl.ConfigError, match="split='test'"):
        corpus.corpus_tokens(model, "test")


def test_resample_dead_reinitialises_only_dead_neurons():
    import jax

    from pi2lab.train.loop import resample_dead

    cfg = dataclasses.replace(
        bundled_config(300),
        hidden_size=32,
        intermediate_size=64,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        head_dim=16,
    )
    params = pl.init_params(cfg, jax.random.key(0))
    dead = np.zeros((2, 64), bool)
    dead[1, [3, 40]] = True
    new, count = resample_dead(params, dead, np.random.default_rng(0))
    assert count == 2
    np.testing.assert_array_equal(new["layers"][0]["gate"], params["layers"][0]["gate"])
    changed = np.any(
        np.asarray(new["layers"][1]["gate"]) != np.asarray(params["layers"][1]["gate"]), axis=1
    )
    np.testing.assert_array_equal(np.flatnonzero(changed), [3, 40])
    assert not np.asarray(new["layers"][1]["down"])[[3, 40]].any()
