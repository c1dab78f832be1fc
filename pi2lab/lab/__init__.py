"""Sweeps: grids of configurations of the offload engine (measured on this machine) or of the
decode simulator (phone scale), run on Dask, results in one tidy table.

:mod:`pi2lab.lab.grid` reads a grid file and expands it into configurations;
:mod:`pi2lab.lab.runs` runs one configuration (on a Dask worker, or here) through
:mod:`pi2lab.bench.offload` or :func:`pi2lab.plan.simulator.simulate_decode`;
:mod:`pi2lab.lab.sweep` submits them and writes the table. Running sweeps needs the ``lab``
extra (``pip install -e '.[lab]'``: dask, distributed, pandas, pyarrow, pyyaml).
"""

from __future__ import annotations

from pi2lab.errors import MissingExtraError

EXTRA = ("dask", "distributed", "pandas", "pyarrow", "yaml")


def require_extra() -> None:
    """Raises :class:`~pi2lab.errors.MissingExtraError` (saying how to install it) when a
    package of the ``lab`` extra is missing."""
    for module in EXTRA:
        try:
            __import__(module)
        except ImportError as e:
            raise MissingExtraError(
                f"the lab extra is not installed ({e}); install it with: pip install -e '.[lab]'"
            ) from None
