"""``pi2lab train``: the bundled model end to end — corpus, tokenizer, training, model card."""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

from pi2lab.config import ModelConfig
from pi2lab.model.pretrained import Model, load_pretrained, save_pretrained
from pi2lab.train import baselines, corpus
from pi2lab.train.loop import TrainConfig, held_out_stats, make_sequences, train
from pi2lab.train.tokenizer import EOS, encode_documents, train_bpe


def bundled_config(vocab_size: int = 4096) -> ModelConfig:
    """The bundled model's shape: a small Bamboo-style (dReLU) decoder."""
    return ModelConfig(
        architecture="bamboo",
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=1024,
        num_layers=6,
        num_heads=4,
        num_kv_heads=2,
        head_dim=64,
        ffn_activation="drelu",
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,  # EOS doubles as BOS, see train_bundled
        eos_token_id=(1,),
    )


def train_bundled(out: Path, tc: TrainConfig, *, vocab_size: int = 4096) -> dict:
    """Trains the bundled model into ``out`` and returns the figures its model card reports."""
    train_docs, held_docs = corpus.split_documents(corpus.stdlib_documents())
    tok = train_bpe(train_docs, vocab_size)
    # Documents are separated by EOS in the training stream, so a prompt starts after one:
    # EOS doubles as BOS (as in GPT-2).
    eos = tok.token_to_id(EOS)
    cfg = dataclasses.replace(
        bundled_config(tok.get_vocab_size()), bos_token_id=eos, eos_token_id=(eos,)
    )

    def log(r):
        print(json.dumps(r), file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    params, history = train(
        cfg, tc, encode_documents(tok, train_docs), encode_documents(tok, held_docs), log=log
    )
    steps = history[-1]["step"]
    training = {
        **dataclasses.asdict(tc),
        "steps_run": steps,
        "tokens_seen": steps * tc.batch_size * tc.seq_len,
        "train_seconds": round(time.perf_counter() - t0, 1),
        "machine": platform.machine(),
        "final_l1": next((r["l1"] for r in reversed(history) if "l1" in r), None),
    }
    model = Model(config=cfg, params=params, tokenizer=tok)
    save_pretrained(
        model,
        out,
        extra_files={
            "train_log.jsonl": "".join(json.dumps(r) + "\n" for r in history),
            "card.json": json.dumps({"training": training}, indent=2) + "\n",
        },
    )
    return write_card(out)


def write_card(path: Path) -> dict:
    """Measures the figures of the model card of the model in ``path`` (whose ``card.json``
    holds its training record) and writes ``README.md`` and ``card.json``."""
    path = Path(path)
    model = load_pretrained(path)
    cfg, tok, params = model.config, model.tokenizer, model.params
    training = json.loads((path / "card.json").read_text())["training"]
    train_docs, held_docs = corpus.split_documents(corpus.stdlib_documents())
    train_stream = encode_documents(tok, train_docs)
    held_stream = encode_documents(tok, held_docs)
    seq_len = training["seq_len"]
    stats = held_out_stats(params, cfg, make_sequences(held_stream, seq_len))
    on_train = held_out_stats(params, cfg, make_sequences(train_stream, seq_len, limit=1600))
    bigram, lam = baselines.bigram_perplexity(train_stream, held_stream, cfg.vocab_size)
    card = {
        "parameters": int(sum(a.size for a in jax.tree.leaves(params))),
        "corpus": {
            "source": f"Python {platform.python_version()} standard-library docstrings "
            "and pydoc_data topics",
            "documents_train": len(train_docs),
            "documents_held_out": len(held_docs),
            "characters_train": sum(map(len, train_docs)),
            "characters_held_out": sum(map(len, held_docs)),
            "tokens_train": int(train_stream.size),
            "tokens_held_out": int(held_stream.size),
            "fingerprint": corpus.fingerprint(train_docs + held_docs),
        },
        "training": {**training, "epochs": training["tokens_seen"] / train_stream.size},
        "held_out": {
            "perplexity": stats["perplexity"],
            "tokens": stats["tokens"],
            "unigram_perplexity": baselines.unigram_perplexity(
                train_stream, held_stream, cfg.vocab_size
            ),
            "bigram_perplexity": bigram,
            "bigram_lambda": lam,
        },
        "sparsity": {
            **{
                k: stats[k]
                for k in ("sparsity_per_layer", "dead_fraction_per_layer", "top10_share_per_layer")
            },
            "train_tokens_checked": on_train["tokens"],
            "dead_on_train_per_layer": on_train["dead_fraction_per_layer"],
        },
    }
    (path / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (path / "README.md").write_text(model_card(cfg, card))
    return card


def card_summary(card: dict) -> dict:
    """The model card's held-out figures and the mean FFN sparsity over the layers."""
    per_layer = card["sparsity"]["sparsity_per_layer"]
    return {**card["held_out"], "mean_sparsity": sum(per_layer) / len(per_layer)}


def model_card(cfg: ModelConfig, card: dict) -> str:
    """The bundled model's README, written from measured figures only."""
    c, t, h, s = card["corpus"], card["training"], card["held_out"], card["sparsity"]
    n_params = card["parameters"]
    rows = "\n".join(
        f"| {i} | {sp:.3f} | {dead:.3f} | {dead_train:.3f} | {top:.3f} |"
        for i, (sp, dead, dead_train, top) in enumerate(
            zip(
                s["sparsity_per_layer"],
                s["dead_fraction_per_layer"],
                s["dead_on_train_per_layer"],
                s["top10_share_per_layer"],
                strict=True,
            )
        )
    )
    bigram = h["bigram_perplexity"]
    means = " | ".join(
        f"{np.mean(s[k]):.3f}"
        for k in (
            "sparsity_per_layer",
            "dead_fraction_per_layer",
            "dead_on_train_per_layer",
            "top10_share_per_layer",
        )
    )
    return f"""# pydoc-drelu — pi2lab's bundled sparse model

A small Bamboo-style decoder (dReLU FFN: ReLU(gate) * ReLU(up)) trained from scratch by
`pi2lab train` so that every pi2lab demo, test and notebook runs offline. It is a research
fixture for activation sparsity, not a useful language model.

## Shape
{cfg.num_layers} layers, hidden {cfg.hidden_size}, FFN {cfg.intermediate_size} neurons per layer,
{cfg.num_heads} query heads / {cfg.num_kv_heads} KV heads of width {cfg.head_dim}, vocabulary
{cfg.vocab_size} (byte-level BPE trained with `tokenizers`), context {cfg.max_position_embeddings},
tied embeddings, {n_params / 1e6:.2f}M parameters, stored in float32.

## Corpus
{c["source"]}: {c["documents_train"]} training documents ({c["characters_train"]:,} characters,
{c["tokens_train"]:,} tokens) and {c["documents_held_out"]} held-out documents
({c["characters_held_out"]:,} characters, {c["tokens_held_out"]:,} tokens), split by a CRC of each
document's name (fingerprint `{c["fingerprint"]}`).

## Training
AdamW (peak learning rate {t["learning_rate"]}, weight decay {t["weight_decay"]}, cosine schedule
with {t["warmup_fraction"]:.0%} warm-up), batch {t["batch_size"]} x {t["seq_len"]} tokens,
{t["steps_run"]} steps = {t["tokens_seen"]:,} tokens seen ({t["epochs"]:.1f} epochs) in
{t["train_seconds"] / 60:.1f} minutes on a 2-core {t["machine"]} CPU. Loss: cross-entropy plus
an L1 penalty on FFN activations whose coefficient a controller steers so that per-token
sparsity approaches {t["target_sparsity"]:.0%} (final coefficient {t["final_l1"]:.3g}). The
checkpoint with the best held-out perplexity in the second half of the run is kept.
`train_log.jsonl` holds the evaluations; `card.json` every figure below.

## Held-out perplexity ({h["tokens"]:,} tokens)
| model | perplexity |
|---|---|
| this model | {h["perplexity"]:.1f} |
| bigram + unigram (lambda {h["bigram_lambda"]:.2f}, chosen on held-out) | {bigram:.1f} |
| unigram (add-one) | {h["unigram_perplexity"]:.1f} |

## FFN activation sparsity (held-out text)
Sparsity: mean fraction of a layer's neurons whose activation is exactly zero, per token.
Dead: fraction of neurons that never fire on the held-out text; dead (train): the same on the
first {s["train_tokens_checked"]:,} training tokens, which separates neurons that never fire
from neurons tied to topics the held-out documents lack. Top-10% share: share of all
activations made by the 10% most frequently firing neurons.

| layer | sparsity | dead | dead (train) | top-10% share |
|---|---|---|---|---|
{rows}
| mean | {means} |

## Reproduce
`pi2lab train --out data/models/pydoc-drelu --time-budget {t["time_budget_s"]:.0f}` (the
schedule follows wall-clock time, so the step count depends on the machine).
"""
