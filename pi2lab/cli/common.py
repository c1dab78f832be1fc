"""What the command modules share: argument types, flags, loading a model for an engine, and
printing."""

from __future__ import annotations

import argparse
import json
import sys


def memory_budget(text: str) -> int | float:
    """``0.5`` (share of the FFN bytes), ``123456`` (bytes), or ``2GB`` / ``512MiB``."""
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    t = text.strip().upper()
    for suffix, scale in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * scale)
    value = float(t)
    return value if value <= 1 and "." in t else int(value)


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
