"""The cluster explorer redraws from its sweep when a control moves (headless)."""

import numpy as np

from pi2lab.viz.apps import ClusterExplorer
from pi2lab.viz.figures import cluster_tradeoff


def stats(share: float, c: int) -> dict:
    return {
        "clusters_active_share": share,
        "firing_share_of_computed": 1 / c,
        "clusters_active_per_token": 10 * share,
        "cold_neurons_computed_per_token": 10 * share * c,
    }


def sweep(layer: int) -> list[dict]:
    return [
        {
            "cluster_size": c,
            "frequency_order": stats(0.2 + 0.2 * i + 0.01 * layer, c),
            "coactivation_order": stats(0.1 + 0.1 * i + 0.01 * layer, c),
            "ffn_loop_ms": 1.0 + i,
        }
        for i, c in enumerate((1, 4, 16))
    ]


def test_controls_redraw_the_bars():
    app = ClusterExplorer([sweep(0), sweep(1)])
    assert app.placement.value == "coactivation" and app.size.label == "16"
    np.testing.assert_allclose(app.figure.data[0].y, [0.3, 0.31])
    app.placement.value = "frequency"
    np.testing.assert_allclose(app.figure.data[0].y, [0.6, 0.61])
    app.size.value = 0
    np.testing.assert_allclose(app.figure.data[0].y, [0.2, 0.21])
    np.testing.assert_allclose(app.figure.data[2].y, [1.0, 1.0])
    assert "1-neuron clusters, frequency order" in app.figure.layout.title.text


def test_tradeoff_figure_has_both_placements():
    fig = cluster_tradeoff([sweep(0), sweep(1)])
    names = [t.name for t in fig.data]
    assert len(names) == 4 and any("co-activation" in n for n in names)
    np.testing.assert_allclose(fig.data[0].y, [0.205, 0.405, 0.605])
