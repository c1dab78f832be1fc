"""Activation profiling: which FFN neurons fire, per token and per layer (and expert).

A trace is saved as a compressed ``.npz`` with:

  ``masks``   uint8 ``[L, N, ceil(F/8)]`` (MoE: ``[L, N, E, ceil(F/8)]``): bit-packed active
              sets (``np.packbits`` along the neuron axis, big-endian bit order), one row per
              token; for MoE, experts a token was not routed to are all-zero;
  ``routed``  bool ``[L, N, E]`` (MoE only): experts each token was routed to;
  ``tokens``  int32 ``[N]``: the token ids profiled;
  ``meta``    a JSON string: format version, model, shapes, chunk length, source text.

Per-neuron frequencies and co-activation statistics are computed from the masks on load.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pi2lab.engine.prefill import ffn_activations
from pi2lab.errors import ConfigError, Pi2labError
from pi2lab.fileio import atomic_file

TRACE_VERSION = 1


class TraceError(Pi2labError):
    """A trace file is missing, malformed, or from another format version."""


@dataclasses.dataclass(frozen=True, eq=False)
class ActivationTrace:
    """Recorded FFN active sets.

    Attributes:
      masks: Bit-packed active sets, see the module docstring.
      tokens: Token ids ``[N]``.
      neurons: F, neurons per layer (per expert).
      routed: ``[L, N, E]`` bool for MoE, else None.
      meta: Free-form provenance (model, source, chunk length).
    """

    masks: np.ndarray
    tokens: np.ndarray
    neurons: int
    routed: np.ndarray | None = None
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return self.masks.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.masks.shape[1]

    def active(self, layer: int) -> np.ndarray:
        """Unpacked active sets of one layer: ``[N, F]`` bool (``[N, E, F]`` for MoE)."""
        return np.unpackbits(self.masks[layer], axis=-1, count=self.neurons).astype(bool)

    def counts(self) -> np.ndarray:
        """Tokens on which each neuron fired: ``[L, F]`` (``[L, E, F]`` for MoE)."""
        return np.stack([self.active(i).sum(0) for i in range(self.num_layers)])

    def frequency(self) -> np.ndarray:
        """Firing frequency per neuron: per token, or per routed token for MoE experts."""
        counts = self.counts().astype(np.float64)
        if self.routed is None:
            return counts / self.num_tokens
        return counts / np.maximum(self.routed.sum(1), 1)[..., None]

    def sparsity(self) -> np.ndarray:
        """Mean fraction of inactive neurons per token, per layer ``[L]`` (routed experts only
        for MoE)."""
        fired = self.counts().reshape(self.num_layers, -1).sum(1)
        slots = self.num_tokens if self.routed is None else self.routed.sum((1, 2))
        return 1.0 - fired / (slots * self.neurons)

    def coactivation(
        self, layer: int, neurons: np.ndarray, expert: int | None = None
    ) -> np.ndarray:
        """``P(j fires | i fires)`` for the given neurons of a layer: ``[n, n]``, NaN where i
        never fires."""
        act = self.active(layer)
        act = act[:, expert] if expert is not None else act
        sub = act[:, np.asarray(neurons)].astype(np.float64)  # [N, n]
        joint = sub.T @ sub
        with np.errstate(invalid="ignore", divide="ignore"):
            return joint / np.diag(joint)[:, None]

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the ``.npz`` atomically (temporary file, then rename)."""
        path = Path(path)
        meta = {**self.meta, "version": TRACE_VERSION, "neurons": self.neurons}
        arrays = {"masks": self.masks, "tokens": self.tokens, "meta": np.array(json.dumps(meta))}
        if self.routed is not None:
            arrays["routed"] = self.routed
        with atomic_file(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ActivationTrace:
        path = Path(path)
        if not path.is_file():
            raise TraceError(f"{path}: trace file not found")
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                masks, tokens = z["masks"], z["tokens"]
                routed = z["routed"] if "routed" in z.files else None
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise TraceError(f"{path}: not a pi2lab activation trace ({e})") from e
        if meta.get("version") != TRACE_VERSION:
            raise TraceError(
                f"{path}: trace format version {meta.get('version')!r}; expected {TRACE_VERSION}"
            )
        neurons = int(meta["neurons"])
        if masks.shape[-1] != (neurons + 7) // 8 or masks.shape[1] != tokens.size:
            raise TraceError(
                f"{path}: masks of shape {list(masks.shape)} do not match "
                f"{tokens.size} tokens x {neurons} neurons"
            )
        return cls(masks=masks, tokens=tokens, neurons=neurons, routed=routed, meta=meta)


def profile(model, tokens: np.ndarray, *, chunk: int = 256, source: str = "") -> ActivationTrace:
    """Runs the dense forward over ``tokens`` in independent chunks of ``chunk`` tokens and
    records every layer's active set for every token.

    Raises:
      ConfigError: no tokens.
    """
    tokens = np.asarray(tokens, np.int32)
    if tokens.size == 0:
        raise ConfigError("no tokens to profile: expected at least 1")
    cfg = model.config
    chunk = min(chunk, cfg.max_position_embeddings)
    per_layer: list[list[np.ndarray]] = [[] for _ in range(cfg.num_layers)]
    routed: list[list[np.ndarray]] = [[] for _ in range(cfg.num_layers)]
    for s in tqdm(range(0, tokens.size, chunk), desc="profile", unit="chunk", leave=False):
        for i, act in enumerate(ffn_activations(model, tokens[s : s + chunk])):
            act = np.asarray(act) != 0
            per_layer[i].append(np.packbits(act, axis=-1))
            if cfg.is_moe:
                routed[i].append(act.any(-1))
    masks = np.stack([np.concatenate(m) for m in per_layer])
    meta = {
        "model": str(model.path) if model.path else "",
        "source": source,
        "chunk": chunk,
        "architecture": cfg.architecture,
        "activation": cfg.ffn_activation,
    }
    return ActivationTrace(
        masks=masks,
        tokens=tokens,
        neurons=cfg.intermediate_size,
        routed=np.stack([np.concatenate(r) for r in routed]) if cfg.is_moe else None,
        meta=meta,
    )


def record_trace(model, tokens: np.ndarray, out: str | os.PathLike, *, source: str = "") -> dict:
    """Profiles ``model`` on ``tokens`` (see :func:`profile`), saves the trace to ``out`` and
    returns a summary: the path, tokens, file bytes and sparsity per layer (4 decimals)."""
    trace = profile(model, tokens, source=source)
    path = trace.save(out)
    return {
        "out": str(path),
        "tokens": trace.num_tokens,
        "bytes": path.stat().st_size,
        "sparsity_per_layer": [round(float(s), 4) for s in trace.sparsity()],
    }


def activation_sparsity(model, tokens) -> np.ndarray:
    """Per-layer FFN sparsity ``[L]`` of ``tokens``: the mean fraction of neurons whose
    activation is exactly zero, per token (for MoE, over the experts each token was routed to)."""
    return profile(model, tokens, chunk=max(len(tokens), 1)).sparsity()
