"""``pi2lab bench``: speed measured on this machine, side by side in one run; ``bench compare``
puts two runs' rows side by side."""

from __future__ import annotations

import json

# knob -> help: list-valued flags, expanded into the grid of every combination (as llama.cpp's
# llama-bench does); each bench says which it has (`pi2lab.bench.KNOBS`) and reads the values
GRID_FLAGS = {
    "model": "dense, offload: bundled, synthetic-7b",
    "precision": "dense: f32, int8, int4 weights; offload: f32, f16, int8, int4 bundles",
    "engine": "offload: powerinfer2, llmflash, dense-stream",
    "budget": "offload, planner: neuron cache as a share of the FFN bytes, in (0, 1]",
    "policy": "offload: cache policy (lru, lfu, window-K, static-hot, segmented[-F])",
    "hot_fraction": "offload: segmented policy's hot share, in [0, 1]",
    "mode": "offload, planner: overlap mode (none, matrix, cluster)",
    "io_threads": "offload, planner: reader threads",
    "depth": "offload: units in flight (cluster overlap)",
    "prefetch": "offload: cross-layer prefetch, layers read ahead (0: off)",
    "cluster_size": "sparse: neurons per cold cluster; offload: neurons per unit on flash",
    "density": "sparse: share of neurons firing, in (0, 1]",
    "masks": "sparse: coactivated, fitted, independent",
    "placement": "sparse: coactivation, frequency",
}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks (--output table|json|csv|md); `bench compare A.json B.json` prints the "
        "ratio per row",
    )
    p.add_argument("what", choices=["dense", "sparse", "offload", "planner", "peer", "compare"])
    p.add_argument("files", nargs="*", help="compare: two JSON files of earlier runs (A, B)")
    p.add_argument("--profile", default=None, help="planner: hardware profile (default: measure)")
    p.add_argument("--quick", action="store_true", help="fewer steps and layers (smoke runs)")
    p.add_argument("--steps", type=int, default=None, help="decode steps per measurement")
    p.add_argument(
        "--layers",
        type=int,
        default=None,
        help="layers of the synthetic 7B and Mixtral-shaped models",
    )
    p.add_argument(
        "--output",
        choices=["table", "json", "csv", "md"],
        default="table",
        help="table (for people), json (one object, flat rows inside), csv or md (the rows)",
    )
    p.add_argument("--json", action="store_true", help="the same as --output json")
    grid = p.add_argument_group(
        "grid", "comma-separated values, run in every combination (e.g. --budget 0.4,0.5)"
    )
    for knob, text in GRID_FLAGS.items():
        grid.add_argument("--" + knob.replace("_", "-"), dest=knob, metavar="V,...", help=text)
    p.set_defaults(func=run)


def run(args) -> int:
    from pi2lab import bench
    from pi2lab.bench import rows
    from pi2lab.errors import ConfigError

    grid = {k: getattr(args, k) for k in GRID_FLAGS if getattr(args, k) is not None}
    if args.what == "compare":
        if grid:
            raise ConfigError(f"bench compare: grid flags ({', '.join(grid)}) apply to runs")
        if len(args.files) != 2:
            raise ConfigError(
                f"bench compare: expected two JSON files (A B), got {len(args.files)}"
            )
        table = rows.compare(rows.load(args.files[0]), rows.load(args.files[1]))
        print(
            json.dumps(table) if args.json or args.output == "json" else rows.format_compare(table)
        )
        return 0
    if args.files:
        raise ConfigError(f"bench {args.what}: unexpected arguments {' '.join(args.files)}")
    extra = {"profile": args.profile} if args.what == "planner" else {}
    result = bench.run(
        args.what, quick=args.quick, steps=args.steps, layers=args.layers, grid=grid, **extra
    )
    fmt = "json" if args.json else args.output
    print(bench.format_table(result) if fmt == "table" else rows.render(result, fmt))
    return 0
