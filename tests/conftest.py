"""Shared fixtures and builders: tiny configs, model shapes and hardware profiles, random
traces and policies (hypothesis strategies), tiny random checkpoints written by Hugging Face
transformers.

Every axis has its own size (hidden 48, heads 6, kv heads 2, head dim 10, FFN 56, vocab 97,
layers 3) so a swapped axis cannot pass.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import numpy as np
import pytest
from hypothesis import strategies as st

from pi2lab.plan.hardware import HardwareProfile, StoragePoint
from pi2lab.plan.shapes import ModelShape
from pi2lab.policies import LFU, LRU, Belady, Policy, Segmented, StaticHot, Window

TINY = dict(
    vocab_size=97,
    hidden_size=48,
    intermediate_size=56,
    num_hidden_layers=3,
    num_attention_heads=6,
    num_key_value_heads=2,
    head_dim=10,
    max_position_embeddings=64,
)

HF_CASES = {
    "llama-silu": ("LlamaConfig", "LlamaForCausalLM", dict(hidden_act="silu")),
    "llama-relu": ("LlamaConfig", "LlamaForCausalLM", dict(hidden_act="relu", rope_theta=500.0)),
    "mistral-window": (
        "MistralConfig",
        "MistralForCausalLM",
        dict(hidden_act="silu", sliding_window=5),
    ),
    "mixtral-relu": (
        "MixtralConfig",
        "MixtralForCausalLM",
        dict(hidden_act="relu", num_local_experts=4, num_experts_per_tok=2),
    ),
}


def tiny_config(**overrides):
    """A tiny dReLU config with a different size on every axis; ``overrides`` change fields."""
    import pi2lab as pl

    base = dict(
        architecture="bamboo",
        ffn_activation="drelu",
        vocab_size=97,
        hidden_size=48,
        intermediate_size=56,
        num_layers=2,
        num_heads=6,
        num_kv_heads=2,
        head_dim=10,
        max_position_embeddings=64,
    )
    return pl.ModelConfig(**{**base, **overrides})


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """``{case: (directory, torch model)}`` for the HF_CASES, seeded and saved once."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = {}
    for i, (name, (cfg_cls, model_cls, extra)) in enumerate(HF_CASES.items()):
        torch.manual_seed(i)
        cfg = getattr(transformers, cfg_cls)(**TINY, **extra)
        model = getattr(transformers, model_cls)(cfg).eval()
        with torch.no_grad():  # default init is tiny; widen it so every path matters
            for p in model.parameters():
                if p.ndim > 1:
                    p.normal_(0.0, 0.2)
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        out[name] = (path, model)
    return out


@pytest.fixture(scope="session")
def lab_scheduler(tmp_path_factory):
    """The address of a local Dask cluster of two worker processes for sweep tests
    (:mod:`pi2lab.lab`); flash layouts go to a temporary bench directory, in the workers (which
    inherit it) and here."""
    pytest.importorskip("distributed")
    from pi2lab.lab.sweep import local_cluster

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PI2LAB_BENCH_DIR", str(tmp_path_factory.mktemp("bench")))
        with local_cluster("sim", workers=2) as cluster:
            yield cluster.scheduler_address


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def tiny_shape() -> ModelShape:
    """One layer, 96 neurons of 192 bytes (int4, D=128): one 4 KiB read per unit."""
    cfg = tiny_config(
        vocab_size=100,
        hidden_size=128,
        intermediate_size=96,
        num_heads=4,
        head_dim=32,
        num_layers=1,
    )
    return ModelShape(name="tiny", config=cfg, active_fraction=(0.05,))


def round_profile(storage: dict, **fields) -> HardwareProfile:
    """A hardware profile in round numbers for tests (not a measurement); ``storage`` maps
    ``(block bytes, threads)`` to MB/s."""
    base = dict(
        name="round",
        description="round numbers for tests",
        cpu_threads=2,
        ram_bytes=8_000_000_000,
        memory_gbs=20.0,
        dense_gbs=10.0,
        sparse_gbs=5.0,
        sequential_mbs=2000.0,
    )
    points = tuple(
        StoragePoint(block=b, threads=t, mb_per_s=float(v)) for (b, t), v in storage.items()
    )
    return HardwareProfile(storage=points, **{**base, **fields})


# -- random traces and policies (hypothesis) ------------------------------------------------
@st.composite
def traces(draw, max_units: int = 64, max_tokens: int = 40) -> tuple[list[np.ndarray], int, int]:
    """(trace, universe, capacity): ``trace[t]`` a sorted unique id array, some skewed."""
    universe = draw(st.integers(1, max_units))
    steps = draw(st.integers(1, max_tokens))
    capacity = draw(st.integers(0, universe))
    seed = draw(st.integers(0, 2**32 - 1))
    skew = draw(st.sampled_from([0.0, 1.0, 2.5]))  # 0: uniform; else hot-first Zipf
    density = draw(st.floats(0.0, 1.0))
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, universe + 1) ** skew
    p *= min(density * universe / p.sum(), 1.0 / p.max())  # per-unit firing probability
    trace = [np.flatnonzero(rng.random(universe) < p) for _ in range(steps)]
    return trace, universe, capacity


@st.composite
def policies(draw, trace: list[np.ndarray], universe: int) -> Policy:
    kind = draw(st.sampled_from(["lru", "lfu", "window", "static", "segmented", "belady"]))
    if kind == "window":
        return Window(k=draw(st.integers(1, 6)))
    if kind == "segmented":
        return Segmented(
            hot_units=draw(st.integers(0, universe)),
            hot_fraction=draw(st.floats(0.0, 1.0)),
            group=draw(st.integers(1, 9)),
        )
    if kind == "belady":
        return Belady(future=trace)
    return {"lru": LRU(), "lfu": LFU(), "static": StaticHot()}[kind]
