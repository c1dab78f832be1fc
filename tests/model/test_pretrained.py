"""Checkpoint loading and saving: formats that must load, and bad input that must not."""

import json
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import pi2lab as pl
from tests.conftest import tiny_config

CFG = tiny_config()


@pytest.fixture
def ckpt(tmp_path):
    params = pl.init_params(CFG, jax.random.key(0), std=0.2)
    return pl.save_pretrained(pl.Model(config=CFG, params=params), tmp_path / "ckpt")


def test_save_load_round_trip(ckpt):
    model = pl.load_pretrained(ckpt)
    again = pl.load_pretrained(pl.save_pretrained(model, ckpt.parent / "again"))
    for a, b in zip(jax.tree.leaves(model.params), jax.tree.leaves(again.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not [p for p in ckpt.parent.iterdir() if p.name.startswith(".")]  # no temp left


def test_sharded_checkpoint_loads(ckpt, tmp_path):
    tensors = load_file(ckpt / "model.safetensors")
    names = sorted(tensors)
    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    shutil.copy(ckpt / "config.json", shard_dir)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, shard_dir / shard)
        weight_map |= dict.fromkeys(part, shard)
    (shard_dir / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    tokens = np.arange(7)
    np.testing.assert_array_equal(
        np.asarray(pl.dense_logits(pl.load_pretrained(shard_dir), tokens)),
        np.asarray(pl.dense_logits(pl.load_pretrained(ckpt), tokens)),
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_checkpoints_load(ckpt, tmp_path, dtype):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    tensors = {
        k: torch.from_numpy(v).to(getattr(torch, dtype))
        for k, v in load_file(ckpt / "model.safetensors").items()
    }
    half = tmp_path / dtype
    half.mkdir()
    shutil.copy(ckpt / "config.json", half)
    save_torch(tensors, half / "model.safetensors")
    ref = pl.load_pretrained(ckpt)
    model = pl.load_pretrained(half)
    assert model.dtype == np.float32  # compute dtype defaults to float32
    want = np.asarray(ref.params["layers"][1]["down"])
    got = np.asarray(model.params["layers"][1]["down"])
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-3)
    bf = pl.load_pretrained(half, dtype=jax.numpy.bfloat16)
    assert bf.dtype == jax.numpy.bfloat16


# --- bad input: each names the file / tensor / field and what was expected -----------------


def test_missing_directory(tmp_path):
    with pytest.raises(pl.CheckpointError, match="no such checkpoint directory"):
        pl.load_pretrained(tmp_path / "nope")


def test_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(pl.CheckpointError, match="config.json is missing"):
        pl.load_pretrained(ckpt)


def test_unknown_architecture(ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**cfg, "architectures": ["FalconForX"]}))
    with pytest.raises(pl.ConfigError, match="unknown architecture 'FalconForX'"):
        pl.load_pretrained(ckpt)


def test_tensor_shape_disagrees_with_config(ckpt):
    tensors = load_file(ckpt / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((55, 48), np.float32)
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(
        pl.CheckpointError,
        match=r"'model.layers.1.mlp.up_proj.weight' has shape \[55, 48\], "
        r"expected \[56, 48\]",
    ):
        pl.load_pretrained(ckpt)


def test_missing_tensor(ckpt):
    tensors = load_file(ckpt / "model.safetensors")
    del tensors["model.layers.0.self_attn.k_proj.weight"]
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(
        pl.CheckpointError, match="'model.layers.0.self_attn.k_proj.weight' is missing"
    ):
        pl.load_pretrained(ckpt)


def test_truncated_file(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(pl.CheckpointError, match="model.safetensors"):
        pl.load_pretrained(ckpt)


def test_not_safetensors(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"PK\x03\x04 this is a zip, not safetensors")
    with pytest.raises(pl.CheckpointError, match="not a readable safetensors file"):
        pl.load_pretrained(ckpt)


def test_no_weights_at_all(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(pl.CheckpointError, match="neither model.safetensors nor"):
        pl.load_pretrained(ckpt)


def test_shard_named_in_index_but_absent(ckpt):
    (ckpt / "model.safetensors").rename(ckpt / "model-00001-of-00002.safetensors")
    names = load_file(ckpt / "model-00001-of-00002.safetensors")
    weight_map = {n: "model-00001-of-00002.safetensors" for n in names}
    weight_map["lm_head.weight"] = "model-00002-of-00002.safetensors"
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(pl.CheckpointError, match="'model-00002-of-00002.safetensors'.*absent"):
        pl.load_pretrained(ckpt)
