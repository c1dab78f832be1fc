"""A byte-level BPE tokenizer trained with Hugging Face ``tokenizers``."""

from __future__ import annotations

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

BOS, EOS = "<s>", "</s>"


def train_bpe(texts: list[str], vocab_size: int) -> tokenizers.Tokenizer:
    """Byte-level BPE over ``texts``; ids 0 and 1 are BOS and EOS."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def encode_documents(tok: tokenizers.Tokenizer, texts: list[str]) -> np.ndarray:
    """One int32 stream: each document's ids followed by EOS."""
    eos = tok.token_to_id(EOS)
    parts = []
    for enc in tok.encode_batch(texts):
        parts += [enc.ids, [eos]]
    return np.fromiter((i for p in parts for i in p), np.int32)
