"""``pi2lab sweep GRID``: a grid of engine (measured) or simulator (simulated) configurations
run on Dask, one tidy table out."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid file's configurations on Dask (a local cluster, or --scheduler) into "
        "one table; needs the lab extra",
    )
    p.add_argument("grid", help="grid file (.yaml, .yml or .json; see pi2lab.lab.grid)")
    p.add_argument(
        "--out",
        default=None,
        help="table to write (.parquet or .csv), after every configuration; configurations "
        "already there for this commit are skipped (default: print the table only)",
    )
    p.add_argument("--scheduler", default=None, help="a running Dask scheduler (tcp://host:port)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="local cluster's workers (default: cores / threads per run measured, cores simulated)",
    )
    p.add_argument(
        "--threads-per-run",
        type=int,
        default=2,
        help="cores each measured configuration gets to itself (local cluster)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pi2lab.lab import require_extra

    require_extra()
    from pi2lab.lab.grid import Grid
    from pi2lab.lab.sweep import run_sweep

    grid = Grid.load(args.grid)
    table = run_sweep(
        grid,
        args.out,
        scheduler=args.scheduler,
        workers=args.workers,
        threads_per_run=args.threads_per_run,
        progress=not args.no_progress,
    )
    shown = [c for c in table.columns if c not in ("timeline", "commit") and c[:8] != "version_"]
    print(table[shown].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    failed = int(table["error"].notna().sum())
    measured = "measured here" if grid.target == "engine" else "SIMULATED, not measured"
    print(
        f"{len(table)} rows ({measured}), {failed} failed"
        + (f"; table: {args.out}" if args.out else "")
    )
    return 0
