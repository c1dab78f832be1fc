"""``pi2lab bench``: speed measured on this machine, side by side in one run."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (print figures; --json for one JSON object)")
    p.add_argument("what", choices=["dense", "sparse", "offload", "planner", "peer"])
    p.add_argument("--profile", default=None, help="planner: hardware profile (default: measure)")
    p.add_argument("--quick", action="store_true", help="fewer steps and layers (smoke runs)")
    p.add_argument("--steps", type=int, default=None, help="decode steps per measurement")
    p.add_argument("--layers", type=int, default=None, help="layers of the synthetic 7B model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from pi2lab import bench

    extra = {"profile": args.profile} if args.what == "planner" else {}
    result = bench.run(args.what, quick=args.quick, steps=args.steps, layers=args.layers, **extra)
    print(json.dumps(result) if args.json else bench.format_table(result))
    return 0
