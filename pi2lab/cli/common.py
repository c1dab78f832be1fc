"""What the command modules share: argument types, flags, loading a model for an engine, and
printing."""

from __future__ import annotations

import argparse
import json
import sys

from pi2lab.budget import MemoryBudget
from pi2lab.errors import ConfigError


def memory_budget(text: str) -> MemoryBudget:
    """``0.5`` or ``50%`` (share of the FFN bytes), or bytes with a unit: ``2GB``, ``512MiB``."""
    try:
        return MemoryBudget.parse(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def cluster_size_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cluster-size",
        type=int,
        default=None,
        help="sparse engine: neurons per cold cluster (default: the saved plan's; 1 computes "
        "exactly the predicted neurons)",
    )


def load_for_engine(name: str, engine: str, threshold: float, cluster_size: int | None = None):
    """:func:`pi2lab.predict.sparsify.load_for_engine`, saying on stderr when sparse decode
    falls back to the oracle predictor."""
    from pi2lab.predict.predictor import PREDICTORS_FILE
    from pi2lab.predict.sparsify import load_for_engine

    model, sparse = load_for_engine(name, engine, threshold=threshold, cluster_size=cluster_size)
    if sparse is not None and sparse.predictors is None:
        print(
            f"pi2lab: {PREDICTORS_FILE} not found beside the model; sparse decode uses the "
            "oracle predictor",
            file=sys.stderr,
        )
    return model, sparse


def print_summary(summary: dict, as_json: bool, width: int) -> None:
    """One JSON object, or one ``key: value`` line per entry."""
    if as_json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>{width}}: {value}")
