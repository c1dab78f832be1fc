"""Flash layout: convert, open, verify; quantization round trips; bad files fail clearly."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy

import pi2lab as pl
from pi2lab.convert import convert
from pi2lab.errors import ConfigError, StorageError
from pi2lab.quant import format as qf
from pi2lab.storage import layout as fl
from tests.conftest import tiny_config

CFG = tiny_config(intermediate_size=64, hidden_size=64, head_dim=8, num_heads=8)


@pytest.fixture(scope="module")
def params():
    return jax.tree.map(np.asarray, pl.init_params(CFG, jax.random.key(3), std=0.2))


def ffn(params, i):
    return np.stack([params["layers"][i][k] for k in fl.FFN_KEYS], axis=1)  # [F, 3, D]


def test_f32_layout_round_trips_and_units_are_aligned(params, tmp_path):
    out = convert(CFG, params, tmp_path / "flash", cluster_size=4)
    layout = fl.verify(out)
    assert layout.stride % 4096 == 0 and layout.units == 16
    assert layout.unit_bytes == 4 * 3 * 64 * 4
    for i in range(CFG.num_layers):
        np.testing.assert_array_equal(layout.read_ffn(i), ffn(params, i))
    full = layout.full_params()
    np.testing.assert_array_equal(full["layers"][1]["q"], params["layers"][1]["q"])
    np.testing.assert_array_equal(full["embed"], params["embed"])
    # neuron 5 = unit 1, slot 1: its gate row, up row and down column lie together
    raw = np.fromfile(out / layout.files[0].file, np.uint8)[layout.stride : 2 * layout.stride]
    bundle = raw[3 * 64 * 4 : 2 * 3 * 64 * 4].view(np.float32).reshape(3, 64)
    np.testing.assert_array_equal(bundle, ffn(params, 0)[5])


@pytest.mark.parametrize(("dtype", "tol"), [("f16", 1e-3), ("int8", 0.01), ("int4", 0.15)])
def test_quantized_layouts_dequantize_close(params, tmp_path, dtype, tol):
    layout = fl.verify(convert(CFG, params, tmp_path / dtype, dtype=dtype))
    w = ffn(params, 1)
    got = layout.read_ffn(1)
    assert np.max(np.abs(got - w)) <= tol * np.max(np.abs(w))
    assert layout.unit_bytes == layout.cluster_size * 3 * 64 * fl.BITS[dtype] // 8


def test_quantized_bundles_are_the_kernel_format(params, tmp_path):
    """One format for the model in memory and on flash: a unit's bytes are the rows of
    pi2lab.quant.format, scales resident."""
    for dtype in ("int8", "int4"):
        layout = fl.verify(convert(CFG, params, tmp_path / dtype, dtype=dtype, cluster_size=4))
        q, scales = qf.quantize(ffn(params, 0), dtype)  # [F, 3, D'], [F, 3, D/32]
        raw = np.fromfile(layout.path / layout.files[0].file, np.uint8)[: layout.unit_bytes]
        np.testing.assert_array_equal(raw, q[:4].view(np.uint8).ravel())
        np.testing.assert_array_equal(layout.resident()["scales.0"], scales)
        assert layout.group_size == qf.BLOCK


def test_default_cluster_size_avoids_padding():
    assert fl.default_cluster_size(14336, 4096, "f32") == 1  # 48 KiB bundles
    assert fl.default_cluster_size(1024, 256, "f32") == 4  # 4 x 3 KiB = 12 KiB
    assert fl.default_cluster_size(14336, 4096, "int4") == 2  # 2 x 6 KiB


def test_moe_has_a_file_per_expert(tmp_path):
    cfg = tiny_config(architecture="mixtral", num_experts=3, num_experts_per_tok=2)
    p = jax.tree.map(np.asarray, pl.init_params(cfg, jax.random.key(1)))
    layout = fl.verify(convert(cfg, p, tmp_path / "moe", cluster_size=8))
    assert len(layout.files) == 6 and layout.files[4].expert == 1
    np.testing.assert_array_equal(layout.full_params()["layers"][1]["up"], p["layers"][1]["up"])


def test_corrupted_unit_is_named_with_layer_and_offset(params, tmp_path):
    out = convert(CFG, params, tmp_path / "flash", cluster_size=4)
    layout = fl.open_layout(out)
    with open(out / layout.files[1].file, "r+b") as fh:
        fh.seek(3 * layout.stride + 100)
        fh.write(b"\xff\xfe")
    with pytest.raises(StorageError, match=rf"layer 1, unit 3 at byte offset {3 * layout.stride}"):
        fl.verify(out)


def test_truncated_missing_and_foreign_files(params, tmp_path):
    out = convert(CFG, params, tmp_path / "flash", cluster_size=4)
    layout = fl.open_layout(out)
    os.truncate(out / layout.files[0].file, layout.stride * 3)
    with pytest.raises(StorageError, match="truncated"):
        fl.open_layout(out)
    (out / layout.files[0].file).unlink()
    with pytest.raises(StorageError, match="layer 0 is missing"):
        fl.open_layout(out)
    header = json.loads((out / fl.HEADER).read_text())
    (out / fl.HEADER).write_text(json.dumps({**header, "format": "pi2lab-flash-0"}))
    with pytest.raises(StorageError, match="expected 'pi2lab-flash-2'"):
        fl.open_layout(out)
    with pytest.raises(StorageError, match="no flash.json"):
        fl.open_layout(tmp_path / "nowhere")


def test_bad_convert_settings_leave_nothing(params, tmp_path):
    with pytest.raises(ConfigError, match="cluster size 5"):
        convert(CFG, params, tmp_path / "a", cluster_size=5)
    odd = tiny_config()  # hidden size 48: not whole blocks of 32
    odd_params = jax.tree.map(np.asarray, pl.init_params(odd, jax.random.key(0)))
    with pytest.raises(ConfigError, match="hidden size 48.*multiple of 32"):
        convert(odd, odd_params, tmp_path / "b", dtype="int8")
    with pytest.raises(ConfigError, match="storage dtype"):
        convert(CFG, params, tmp_path / "c", dtype="int3")
    assert list(tmp_path.iterdir()) == []


def test_interrupted_convert_leaves_no_layout(params, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.numpy, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        convert(CFG, params, tmp_path / "flash")
    assert list(tmp_path.iterdir()) == []


def test_reading_a_layout_imports_no_jax(params, tmp_path):
    out = convert(CFG, params, tmp_path / "flash", dtype="int8", cluster_size=4)
    code = (
        "import sys\n"
        "from pi2lab.storage.layout import verify\n"
        f"params = verify({str(out)!r}).full_params()\n"
        f"assert len(params['layers']) == {CFG.num_layers}\n"
        "assert 'jax' not in sys.modules, 'reading a flash layout imported jax'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
