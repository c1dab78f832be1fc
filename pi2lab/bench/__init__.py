"""``pi2lab bench``: speed measured on this machine, side by side in one run.

Every bench returns one dict holding every figure, with the machine, commit and package
versions described; :mod:`pi2lab.bench.rows` flattens it into rows (``--output json|csv|md``)
so sweeps and scripts read columns.
"""

from __future__ import annotations

from pi2lab.bench import dense, offload, peer, planner, sparse
from pi2lab.bench.grid import Knob, parse_grid
from pi2lab.bench.rows import provenance
from pi2lab.errors import ConfigError

BENCHES = {
    "dense": dense.bench_dense,
    "peer": peer.bench_peer,
    "sparse": sparse.bench_sparse,
    "offload": offload.bench_offload,
    "planner": planner.bench_planner,
}
KNOBS: dict[str, tuple[Knob, ...]] = {  # what each bench's grid can vary
    "dense": dense.KNOBS,
    "peer": (),
    "sparse": sparse.KNOBS,
    "offload": offload.KNOBS,
    "planner": planner.KNOBS,
}


def run(what: str, *, grid: dict | None = None, **kwargs) -> dict:
    """Runs the bench ``what``; ``grid`` maps knobs of :data:`KNOBS` to values (a
    comma-separated string, a list or one value), which the bench runs in every combination
    (knobs left out keep their defaults).

    Raises:
      ConfigError: an unknown bench, a meaningless size, a knob the bench does not have or a
        bad value (before anything is measured).
    """
    if what not in BENCHES:
        raise ConfigError(f"bench {what!r}: expected one of {', '.join(BENCHES)}")
    for name in ("steps", "layers"):
        if kwargs.get(name) is not None and kwargs[name] < 1:
            raise ConfigError(f"{name}={kwargs[name]}: expected at least 1")
    if grid:
        kwargs["grid"] = parse_grid(grid, KNOBS[what], f"bench {what}")
    meta = provenance()
    return {
        **BENCHES[what](**{k: v for k, v in kwargs.items() if v is not None}),
        "provenance": meta,
    }


def format_table(result: dict) -> str:
    commit = result.get("provenance", {}).get("commit", "unknown")
    lines = [
        f"pi2lab bench {result['bench']}  ({result['machine']['backend']}, "
        f"jax {result['machine']['jax']}, commit {commit})"
    ]
    if "grid" in result:
        lines.append("  grid: " + "; ".join(f"{k} {v}" for k, v in result["grid"].items()))
    for name, row in result.items():
        if isinstance(row, dict) and "knobs" in row and "engines" in row:
            lines.append(f"  {name}: {row['model']}")
            lines += [_engine_line(engine, r) for engine, r in row["engines"].items()]
        elif isinstance(row, dict) and "tokens_per_s" in row:
            lines.append(
                f"  {name:<14} {row['tokens_per_s']:>9.2f} tokens/s   "
                f"{row['weight_mb_per_token']:>8.1f} MB weights/token   "
                f"{row['implied_gb_per_s']:>5.1f} GB/s implied   "
                f"(runs: {row['runs_tokens_per_s']})"
            )
        elif isinstance(row, dict) and "summary" in row:
            lines.append(f"  {name}: {row['summary']}")
            lines += _sweep_lines(row.get("cluster_sweep", []))
        elif isinstance(row, dict) and "engines" in row and "note" in row:
            lines += _peer_lines(name, row)
        elif isinstance(row, dict) and "engines" in row:
            lines += _offload_lines(name, row)
        elif isinstance(row, dict) and "precisions" in row:
            lines.append(f"  {name}: {row['note']}")
            for k, r in row["precisions"].items():
                lines.append(_engine_line(f"{k} ({r['unit_kb']:g} KiB units)", r))
                lines.append(
                    f"      memory: accounted {r['engine_accounted_mb']:.0f} MB, resident "
                    f"memory growth {r['engine_rss_growth_mb']:.0f} MB"
                )
        elif isinstance(row, dict) and "plans" in row:
            lines += _planner_lines(name, row)
        elif name == "kernels":
            lines += _kernel_lines(row)
    return "\n".join(lines)


def _peer_lines(name: str, row: dict) -> list[str]:
    lines = [f"  {name}: {row['shape']} ({row['note']})"]
    for engine, r in row["engines"].items():
        lines.append(
            f"    {engine:<26} {r['tokens_per_s']:>8.2f} tokens/s  {r['weight_mb_per_token']:>8.1f}"
            f" MB/token  {r['implied_gb_per_s']:>5.1f} GB/s  (runs: {r['runs']})"
        )
    lines += [f"    {k}: {v}x" for k, v in row["ratios"].items()]
    lines += [
        f"    pi2lab sparse {tag} (10%) / dense {tag}: {r['speedup']:.2f}x, bytes bound "
        f"{r['bytes_bound_speedup']:.2f}x ({r['fraction_of_bound']:.0%} of bound)"
        for tag, r in row["sparse_vs_dense"].items()
    ]
    return lines


def _kernel_lines(row: dict) -> list[str]:
    lines = [f"  kernels on a {row['matrix']} matrix (GB/s of weights):"]
    for name, r in row.items():
        if isinstance(r, dict):
            lines.append(f"    {name:<24} {r['ms']:>7.2f} ms  {r['gb_per_s']:>5.1f} GB/s")
        elif name != "matrix":
            lines.append(f"    {name}: {r} GB/s")
    return lines


def _sweep_lines(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        freq, co = r["frequency_order"], r["coactivation_order"]
        times = ", ".join(
            f"{k[4:-3]} {r[k]} ms" for k in ("ffn_native_ms", "ffn_loop_ms") if k in r
        )
        lines.append(
            f"    {r['cluster_size']:>4}-neuron clusters: active "
            f"{freq['clusters_active_share']:.1%} (frequency order) / "
            f"{co['clusters_active_share']:.1%} (co-activation order), "
            f"firing share of computed {co['firing_share_of_computed']:.1%}; FFN {times}"
        )
    return lines


def _offload_lines(name: str, row: dict) -> list[str]:
    lines = [
        f"  {name}: {row['model']}, FFN {row['ffn_mb']:.0f} MB in {row['unit_kb']:g} KiB units"
    ]
    if "prefetch_note" in row:
        lines.append(f"    ({row['prefetch_note']})")
    lines += [_engine_line(engine, r) for engine, r in row["engines"].items()]
    if row.get("memory_check"):
        m = row["memory_check"]
        lines.append(
            f"    memory: the engines account for {m['accounted_mb']:.0f} MB; the process's "
            f"resident memory grew {m['rss_growth_mb']:.0f} MB (all open, caches warm)"
        )
    lines += [f"    {k}: {v}" for k, v in row["ratios"].items()]
    if "policies_at_50%" in row:
        lines.append(f"    policies at 50% (hit rate): {row['policies_at_50%']}")
    if "expert_popularity" in row:
        pop = row["expert_popularity"]
        lines.append(f"    {pop['note']}: " + "; ".join(map(str, pop["counts"])))
    for p in row.get("storage_curve", []):
        lines.append(
            f"    storage {p['block_kb']:>6g} KiB x {p['threads']} threads: {p['mb_per_s']} MB/s"
        )
    return lines


def _engine_line(engine: str, r: dict) -> str:
    if "ms_per_token" not in r:
        return f"    {engine:<32} {r['tokens_per_s']:>8.2f} tokens/s"
    return (
        f"    {engine:<32} {r['tokens_per_s']:>8.2f} tokens/s  {r['mb_read_per_token']:>8.2f}"
        f" MB read/token ({r['reads_per_token']:g} reads of {r['kb_per_read']:g} KiB)  "
        f"hit {r['hit_rate']:.3f}  I/O share {r['io_share']:.3f}  memory {r['memory_mb']:.0f} MB"
        + (
            f"  prefetch recall {r['prefetch_recall']:.2f}, precision {r['prefetch_precision']:.2f}"
            if "prefetch_recall" in r
            else ""
        )
    )


def _planner_lines(name: str, row: dict) -> list[str]:
    lines = [
        f"  {name}: all resident {row['resident_tokens_per_s']} tokens/s; fitted host costs "
        f"{row['overhead_ms_per_layer']} ms per layer, {row['read_overhead_ms']} ms per read "
        f"(simulator: {row['simulator_overhead_ms_per_layer']}, "
        f"{row['simulator_read_overhead_ms']}; fitted on: {', '.join(row['fitted_on'])})"
    ]
    for r in [*row["plans"], row["planner"]]:
        sim = (
            f"  simulated {r['simulated_tokens_per_s']:>7.2f} ({r['simulated_error']:+.0%})"
            if "simulated_error" in r
            else ""
        )
        lines.append(
            f"    {r['plan']:<16} measured {r['measured_tokens_per_s']:>7.2f} tokens/s  predicted "
            f"{r['predicted_tokens_per_s']:>7.2f} ({r['error']:+.0%}){sim}"
        )
    pct = lambda x: "n/a" if x is None else f"{x:.1%}"
    lines.append(
        f"    median |error| over the plans not fitted on: cost model "
        f"{pct(row['median_abs_error'])}, simulator {pct(row['simulated_median_abs_error'])}; "
        f"planner / best grid plan at 50%: {row['planner_vs_best_grid_at_50%']}"
    )
    lines.append(f"    planner's plan: {row['planner']['plan_json']}")
    return lines
