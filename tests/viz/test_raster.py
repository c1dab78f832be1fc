"""The activation raster (predicted against fired, tokens x neurons) and its explorer, on a
hand-made predictor whose scores are known (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from pi2lab.errors import ConfigError
from pi2lab.viz.apps import RasterExplorer
from pi2lab.viz.figures import RASTER_CLASSES, activation_raster


def test_raster_classes_and_legend_shares():
    fired = np.array([[1, 1, 0, 0], [0, 1, 0, 1]], bool)
    guess = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], bool)
    fig = activation_raster(fired, guess, title="t")
    np.testing.assert_array_equal(fig.data[0].z, [[3, 2, 1, 0], [0, 3, 0, 2]])
    assert fig.data[0].customdata[0][1] == RASTER_CLASSES[2][0]  # hover names the class
    names = [t.name for t in fig.data[1:]]
    assert names == [
        "predicted, did not fire (computed for nothing): 12.5%",
        "fired, not predicted (missed): 25.0%",
        "fired and predicted: 25.0%",
    ]
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    with pytest.raises(ConfigError, match="one shape"):
        activation_raster(fired, guess[:, :3])


def identity_predictor(f: int, d: int) -> dict:
    """Scores = the residual's first ``f`` channels after RMS norm, scaled (rank ``f``)."""
    fc1 = np.zeros((f, d), np.float32)
    fc1[np.arange(f), np.arange(f)] = 1.0
    return dict(
        fc1=fc1,
        b1=np.zeros(f, np.float32),
        fc2=np.eye(f, dtype=np.float32),
        b2=np.full(f, -0.5, np.float32),
    )


def test_raster_explorer_threshold_and_layer_controls():
    rng = np.random.default_rng(0)
    t, d, f = 12, 7, 5
    inputs = [rng.normal(size=(t, d)).astype(np.float32) for _ in range(2)]
    masks = [rng.random((t, f)) < 0.4 for _ in range(2)]
    app = RasterExplorer([identity_predictor(f, d)] * 2, inputs, masks, [-1.0, 0.0, 1.0], tokens=10)
    assert app.threshold.label == "+0.00" and np.shape(app.figure.data[0].z) == (10, f)
    loose = app.predicted().sum()
    app.threshold.value = 2  # +1.00: fewer neurons pass
    assert app.error is None and app.predicted().sum() < loose
    assert "threshold +1.00" in app.figure.layout.title.text
    app.layer.value = 1
    np.testing.assert_array_equal(np.asarray(app.figure.data[0].z) >= 2, masks[1][:10])
    assert app.figure.layout.title.text.startswith("Layer 1")
