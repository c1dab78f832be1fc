"""An independent numpy decoder that reads Hugging Face-layout weights straight from a
safetensors file: the reference for activations transformers lacks (dReLU, FATReLU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def _rms(x, w, eps):
    return w * x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)


def _rope(x, pos, theta):
    k = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, k, 2) / k)
    ang = pos[:, None] * inv[None]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    rot = np.concatenate([-x[..., k // 2 :], x[..., : k // 2]], -1)
    return x * cos[:, None] + rot * sin[:, None]


def _act(g, u, kind, t):
    return {
        "drelu": lambda: np.maximum(g, 0) * np.maximum(u, 0),
        "relu": lambda: np.maximum(g, 0) * u,
        "fatrelu": lambda: np.where(g > t, g, 0) * u,
        "silu": lambda: g / (1 + np.exp(-g)) * u,
    }[kind]()


def logits(ckpt: Path, tokens: np.ndarray, activation: str) -> np.ndarray:
    """Full-sequence logits ``[T, V]`` in float64 for a dense (non-MoE) checkpoint."""
    cfg = json.loads((ckpt / "config.json").read_text())
    w = {k: v.astype(np.float64) for k, v in load_file(ckpt / "model.safetensors").items()}
    h, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or h // nh
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    t = len(tokens)
    pos = np.arange(t, dtype=np.float64)
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = _rms(x, w[p + "input_layernorm.weight"], eps)
        q = _rope((a @ w[p + "self_attn.q_proj.weight"].T).reshape(t, nh, hd), pos, theta)
        k = _rope((a @ w[p + "self_attn.k_proj.weight"].T).reshape(t, nkv, hd), pos, theta)
        v = (a @ w[p + "self_attn.v_proj.weight"].T).reshape(t, nkv, hd)
        heads = []
        for j in range(nh):
            kv = j // (nh // nkv)
            s = q[:, j] @ k[:, kv].T / np.sqrt(hd)
            s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
            pr = np.exp(s - s.max(-1, keepdims=True))
            heads.append((pr / pr.sum(-1, keepdims=True)) @ v[:, kv])
        x = x + np.concatenate(heads, -1) @ w[p + "self_attn.o_proj.weight"].T
        m = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        g, u = m @ w[p + "mlp.gate_proj.weight"].T, m @ w[p + "mlp.up_proj.weight"].T
        x = (
            x
            + _act(g, u, activation, cfg.get("hidden_act_param", 0.0))
            @ w[p + "mlp.down_proj.weight"].T
        )
    x = _rms(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T
