"""GGUF export for llama.cpp (the peer engine ``pi2lab bench peer`` runs on the same weights).

A pi2lab Llama-architecture model is written as llama.cpp's ``llama`` architecture with the
``gguf`` package: tensors in Hugging Face orientation, query and key rows permuted from the
half-split RoPE layout (Hugging Face, pi2lab) to llama.cpp's interleaved pairs, and a
placeholder SentencePiece vocabulary of ``vocab_size`` entries (the special tokens and 256
byte tokens first) so that llama.cpp accepts token ids; nothing is tokenized through it.
llama.cpp's ``llama`` architecture computes SiLU(gate)·up: models with another FFN activation
are refused unless ``speed_only`` is set (then llama.cpp runs the same shapes with SiLU).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pi2lab.config import ModelConfig
from pi2lab.errors import ConfigError, MissingExtraError
from pi2lab.fileio import atomic_file
from pi2lab.model.params import leaf, merge_ffn, tensor_specs

_NAMES = {  # Hugging Face suffix -> GGUF name (per layer: blk.{i}.)
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_TOP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_module():
    """The ``gguf`` package, or MissingExtraError saying how to install it."""
    try:
        import gguf
    except ImportError as e:
        raise MissingExtraError(
            f"the peer extra is not installed ({e}); install it with: pip install -e '.[peer]'"
        ) from None
    return gguf


def _rope_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """``[N*K, D]`` rows from half-split RoPE order to interleaved pairs, per head."""
    k = w.shape[0] // heads
    return w.reshape(heads, 2, k // 2, -1).swapaxes(1, 2).reshape(w.shape)


def write_gguf(
    params: dict, cfg: ModelConfig, path: str | os.PathLike, *, speed_only: bool = False
) -> Path:
    """Writes ``params`` (either FFN layout) as an F32 GGUF file at ``path`` (atomically).

    Raises:
      ConfigError: an architecture llama.cpp's ``llama`` graph does not compute the same way
        (MoE, sliding window, RoPE scaling, or an FFN activation other than SiLU unless
        ``speed_only``).
    """
    gguf = gguf_module()
    if cfg.is_moe or cfg.sliding_window is not None or cfg.rope_scaling is not None:
        raise ConfigError(
            f"GGUF export: {cfg.architecture} with experts, a sliding window or RoPE scaling; "
            "expected a dense Llama-style model"
        )
    if cfg.ffn_activation != "silu" and not speed_only:
        raise ConfigError(
            f"GGUF export: ffn_activation={cfg.ffn_activation!r}; llama.cpp's llama graph "
            "computes SiLU(gate)*up: expected 'silu' (or speed_only=True for timing runs)"
        )
    params = merge_ffn(params)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), "llama")
        w.add_context_length(cfg.max_position_embeddings)
        w.add_embedding_length(cfg.hidden_size)
        w.add_block_count(cfg.num_layers)
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_head_count(cfg.num_heads)
        w.add_head_count_kv(cfg.num_kv_heads)
        w.add_key_length(cfg.head_dim)
        w.add_value_length(cfg.head_dim)
        w.add_rope_dimension_count(cfg.head_dim)
        w.add_rope_freq_base(cfg.rope_theta)
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
        w.add_vocab_size(cfg.vocab_size)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        _placeholder_vocab(w, gguf, cfg.vocab_size)
        for spec in tensor_specs(cfg):
            hf = spec.to_hf(np.asarray(leaf(params, spec.path), np.float32))
            if spec.hf_name.startswith("model.layers."):
                i, suffix = spec.hf_name.split(".", 3)[2:]
                if suffix.endswith("q_proj.weight"):
                    hf = _rope_rows(hf, cfg.num_heads)
                elif suffix.endswith("k_proj.weight"):
                    hf = _rope_rows(hf, cfg.num_kv_heads)
                name = f"blk.{i}.{_NAMES[suffix]}"
            else:
                name = _TOP[spec.hf_name]
            w.add_tensor(name, np.ascontiguousarray(hf, np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def _placeholder_vocab(w, gguf, vocab: int) -> None:
    if vocab < 259:
        raise ConfigError(f"GGUF export: vocab_size={vocab}; expected at least 259 entries")
    normal, byte = gguf.TokenType.NORMAL, gguf.TokenType.BYTE
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256))]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [byte] * 256
    tokens += [f"t{i}" for i in range(len(tokens), vocab)]
    types += [normal] * (vocab - len(types))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * vocab)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
