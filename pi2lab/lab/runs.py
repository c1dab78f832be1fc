"""One configuration of a sweep, run where it is called (a Dask worker, or here): its rows.

A configuration (:meth:`pi2lab.lab.grid.Grid.configurations`) runs all its repetitions in one
call: ``engine`` ones on the offload engine through :func:`pi2lab.bench.offload.measure_points`
(one engine opened, a warm-up block of ``tokens`` decode tokens, then one block per repetition;
**measured** here), ``sim`` ones through :func:`pi2lab.plan.simulator.simulate_decode` (one
run per repetition, seeded by its index; **simulated**). Each repetition is one row: the
configuration's knobs and settings, ``source`` (measured | simulated), tokens/s, I/O share of
the critical path, memory, hit rate, MB read per token, the last token's timeline (JSON
events, :meth:`Timeline.rows <pi2lab.pipeline.timeline.Timeline.rows>`), and the commit and
package versions (:func:`pi2lab.bench.rows.provenance`). A configuration that fails becomes one
row holding its error's text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from pi2lab.bench.offload import KNOBS, figures, measure_points
from pi2lab.bench.rows import provenance
from pi2lab.lab.grid import SOURCE, config_hash, sim_shape
from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.plan.phones import resolve_profile
from pi2lab.plan.simulator import simulate_decode

FIGURES = ("tokens_per_s", "io_share", "memory_mb", "hit_rate", "mb_read_per_token")


def base_row(config: Mapping, meta: dict | None = None) -> dict:
    """What every row of ``config`` carries: its hash, commit, source, knobs and settings."""
    meta = meta or provenance()
    return {
        "source": SOURCE[config["target"]],
        "config_hash": config_hash(config),
        "commit": meta["commit"],
        **{k: v for k, v in config.items() if k != "target"},
        **{f"version_{k}": v for k, v in meta["versions"].items()},
    }


def error_row(config: Mapping, error: BaseException, meta: dict | None = None) -> dict:
    """The row of a configuration that failed: its error's type and message."""
    text = " ".join(str(error).split()) or "(no message)"
    return {
        **base_row(config, meta),
        "repetition": None,
        "error": f"{type(error).__name__}: {text}",
    }


def simulate(config: Mapping, seed: int) -> dict:
    """One simulated run of a ``sim`` configuration (seed ``seed``): its figures."""
    pipe = None
    if config["mode"] is not None:  # llama.cpp-mmap has no pipeline
        pipe = PipelineConfig(
            mode=config["mode"], io_threads=config["io_threads"], depth=config["depth"]
        )
    r = simulate_decode(
        sim_shape(config),
        resolve_profile(config["device"]),
        engine=config["engine"],
        ffn_fraction=config["budget"],
        tokens=config["tokens"],
        pipeline=pipe,
        policy=config["policy"],
        hot_fraction=config["hot_fraction"],
        seed=seed,
    )
    return {
        "tokens_per_s": r.tokens_per_s,
        "io_share": r.io_share,
        "memory_mb": r.memory_bytes / 1e6,
        "hit_rate": r.hit_rate,
        "mb_read_per_token": r.bytes_per_token / 1e6,
        "timeline": json.dumps(r.timeline.rows(0.0)),
    }


def measure(config: Mapping) -> list[dict]:
    """The repetitions of an ``engine`` configuration, measured: their figures."""
    (record,) = measure_points(
        [{knob.name: config[knob.name] for knob in KNOBS}],
        steps=config["tokens"],
        repeats=config["repetitions"],
        layers=config["layers"],
        timelines=True,
    ).values()
    out = []
    for block, timeline in zip(record["blocks"], record["timelines"], strict=True):
        f = figures(block)
        out.append(
            {
                **{k: f[k] for k in FIGURES if k != "memory_mb"},
                "memory_mb": record["memory_bytes"] / 1e6,
                "timeline": json.dumps(timeline),
            }
        )
    return out


def run_configuration(config: Mapping) -> list[dict]:
    """Runs ``config`` here: a row per repetition, or one error row if it failed."""
    meta = provenance()
    try:
        if config["target"] == "sim":
            runs = [simulate(config, seed) for seed in range(config["repetitions"])]
        else:
            runs = measure(config)
    except Exception as e:  # a failed configuration is a row, never a lost sweep
        return [error_row(config, e, meta)]
    base = base_row(config, meta)
    return [{**base, "repetition": i, **run, "error": None} for i, run in enumerate(runs)]


__all__ = ["FIGURES", "base_row", "error_row", "measure", "run_configuration", "simulate"]
