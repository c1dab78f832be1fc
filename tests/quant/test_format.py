"""The block format: round trips, llama.cpp's conventions (Q8_0 scale, Q4_0 nibble order and
signed scale) and the errors for names and shapes it cannot take."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pi2lab.errors import ConfigError
from pi2lab.quant import format as qf


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 5),
    blocks=st.integers(1, 4),
    kind=st.sampled_from(qf.KINDS),
    seed=st.integers(0, 10_000),
    scale=st.sampled_from([1e-3, 1.0, 50.0]),
)
def test_round_trip_error_is_bounded_by_the_step(rows, blocks, kind, seed, scale):
    w = np.random.default_rng(seed).normal(size=(rows, blocks * 32)).astype(np.float32) * scale
    q, s = qf.quantize(w, kind)
    assert q.shape == (rows, qf.row_bytes(blocks * 32, kind)) and s.dtype == np.float16
    back = qf.dequantize(q, s, kind)
    step = np.repeat(np.abs(s.astype(np.float32)), 32, axis=-1)
    # half a step from rounding (int4: a whole step where the opposite of the block's extreme
    # is clipped from +8 to +7, as in Q4_0), plus the float16 rounding of the scale
    bound = (0.5 if kind == "int8" else 1.0) * step + np.abs(w) * 2e-3 + 1e-6
    assert np.all(np.abs(back - w) <= bound)


def test_int8_is_q8_0():
    w = np.linspace(-2.0, 1.0, 32, dtype=np.float32)[None]
    q, s = qf.quantize(w, "int8")
    assert float(s[0, 0]) == pytest.approx(2.0 / 127, rel=1e-3)
    assert q[0, 0] == -127 and q.dtype == np.int8


def test_int4_is_q4_0_nibble_order_and_signed_scale():
    w = np.zeros((1, 32), np.float32)
    w[0, 3], w[0, 20] = 8.0, -3.0  # the largest magnitude is positive: scale = 8 / -8
    q, s = qf.quantize(w, "int4")
    assert float(s[0, 0]) == -1.0
    # weight j in byte j's low nibble, weight j+16 in its high nibble, both offset by 8
    assert q[0, 3] & 0x0F == 0 and q[0, 4] >> 4 == 8 + 3
    np.testing.assert_array_equal(qf.dequantize(q, s, "int4"), w)


def test_zero_blocks_stay_zero():
    for kind in qf.KINDS:
        q, s = qf.quantize(np.zeros((2, 64), np.float32), kind)
        assert not np.any(qf.dequantize(q, s, kind))


def test_unknown_kind_and_untiled_rows_are_named():
    with pytest.raises(ConfigError, match="int3"):
        qf.quantize(np.zeros((2, 64)), "int3")
    with pytest.raises(ConfigError, match="layers.0.q.*multiple of 32"):
        qf.quantize(np.zeros((2, 40)), "int8", "layers.0.q")
    with pytest.raises(ConfigError, match="one scale per 32"):
        qf.dequantize(np.zeros((2, 64), np.int8), np.zeros((2, 3), np.float16), "int8")
