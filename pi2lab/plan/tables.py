"""The reproduction's tables as text (:mod:`pi2lab.plan.reproduce` dicts in, lines out), every
header saying SIMULATED."""

from __future__ import annotations

from pi2lab.plan.paper import ENGINES, SOURCE


def _num(x, fmt: str = ".2f", width: int = 8) -> str:
    return f"{'-' if x is None else format(x, fmt):>{width}}"


def _times(x, fmt: str, width: int) -> str:
    """A speed-up as ``3.3x``; ``n/a`` when there is none (no paper figure to divide by)."""
    return f"{'n/a' if x is None else format(x, fmt) + 'x':>{width + 1}}"


def _ratio(x, width: int = 5) -> str:
    """A simulated/paper ratio; ``n/a`` without a paper figure."""
    return f"{'n/a' if x is None else format(x, '.2f'):>{width}}"


def format_decode_table(table: dict, digits: int = 2) -> str:
    """The decode table as text: simulated beside paper, ratio, then speed-ups and notes."""
    f = f".{digits}f"
    src = "paper" if table["has_paper"] else "no paper"
    lines = [
        f"Decode tok/s, {table['device']}, {table['ffn_on_flash']:.0%} of FFN on flash "
        f"(SIMULATED, {table['tokens']} tokens/run; "
        f"{'paper v1' if table['has_paper'] else 'no paper figures'})",
        f"  {'model':<24} {'engine':<15} {'simulated':>9} {src:>12} {'sim/paper':>9}  target",
    ]
    for r in table["rows"]:
        met = r.get("target_met")
        lines.append(
            f"  {r['model_label']:<24} {r['engine_label']:<15} "
            f"{_num(r['simulated_tokens_per_s'], f, 9)} {_num(r['paper_tokens_per_s'], 'g', 12)} "
            f"{_num(r['ratio'], '.2f', 9)}  {'' if met is None else ('met' if met else 'missed')}"
        )
    lines.append(f"  Speed-ups of PowerInfer-2 (SIMULATED / {src}, sim/paper; target within +-35%)")
    lines.append(f"  {'':<24} {'over llama.cpp':>27}   {'over LLM in a Flash':>27}")

    def cell(s, key):
        met = s.get(f"{key}_target_met")
        mark = "" if met is None else (" met" if met else " missed")
        return (
            f"{_times(s[f'simulated_{key}'], '.1f', 6)} / {_times(s[f'paper_{key}'], '.1f', 5)} "
            f"{_ratio(s.get(f'{key}_ratio'))}{mark:<7}"
        )

    for s in table["speedups"]:
        lines.append(
            f"  {s['model_label']:<24} {cell(s, 'over_llama_cpp')}   {cell(s, 'over_llmflash')}"
        )
    return "\n".join(lines)


def format_ablation(table: dict, digits: int = 2) -> str:
    f = f".{digits}f"
    lines = [
        f"Ablation, Bamboo-7B, {table['device']}, 50% of FFN on flash (SIMULATED, "
        f"{table['tokens']} tokens/run; paper v3)",
        f"  {'rung':<20} {'simulated':>9} {'paper':>7} {'sim/paper':>9} {'gain sim':>8} "
        f"{'gain paper':>10} {'hit rate':>8} {'I/O wait':>8}",
    ]
    for r in table["rows"]:
        lines.append(
            f"  {r['rung']:<20} {_num(r['simulated_tokens_per_s'], f, 9)} "
            f"{_num(r['paper_tokens_per_s'], f, 7)} {_num(r['ratio'], '.2f', 9)} "
            f"{_num(r['simulated_gain'], '.2f', 8)} {_num(r['paper_gain'], '.2f', 10)} "
            f"{_num(r['simulated_hit_rate'], '.3f', 8)} {_num(r['simulated_io_share'], '.0%', 8)}"
        )
    return "\n".join(lines)


def format_memory_sweep(table: dict, digits: int = 2) -> str:
    f = f".{digits}f"
    lines = [
        f"Memory sweep, {table['model']}, {table['device']} (SIMULATED tok/s, "
        f"{table['tokens']} tokens/run)",
        f"  {'budget GB':>9} "
        + " ".join(f"{ENGINES[e]:>15}" for e in ENGINES)
        + f" {'cache share':>11}",
    ]
    for g in dict.fromkeys(p["memory_gb"] for p in table["points"]):
        row = {p["engine"]: p for p in table["points"] if p["memory_gb"] == g}
        lines.append(
            f"  {g:>9g} "
            + " ".join(_num(row[e]["simulated_tokens_per_s"], f, 15) for e in ENGINES)
            + f" {_num(row['powerinfer2']['simulated_cache_share'], '.1%', 11)}"
        )
    if table["paper_points"]:
        lines.append("  Paper points (SIMULATED vs paper)")
        for p in table["paper_points"]:
            lines.append(
                f"  {p['label']:<58} {_num(p['simulated_tokens_per_s'], f, 7)} vs "
                f"{_num(p['paper_tokens_per_s'], f, 6)}  ({p['memory_gb']:g} GB, sim/paper "
                f"{_num(p['ratio'], '.2f', 4)})"
            )
    return "\n".join(lines)


def format_offload_gains(table: dict, digits: int = 2) -> str:
    """The offload-gains table: one line per knob value and budget."""
    f = f".{digits}f"
    lines = [
        f"Offload storage choices, PowerInfer-2, {table['model']}, {table['device']} (SIMULATED, "
        f"{table['tokens']} tokens/run; no paper figures)",
        f"  {'knob':<13} {'value':<26} {'on flash':>8} {'tok/s':>7} {'MB/token':>9} "
        f"{'reads/token':>11} {'hit rate':>8} {'I/O wait':>8}",
    ]
    for r in table["rows"]:
        lines.append(
            f"  {r['knob']:<13} {r['value']:<26} {r['ffn_on_flash']:>8.0%} "
            f"{_num(r['simulated_tokens_per_s'], f, 7)} "
            f"{_num(r['simulated_mb_per_token'], '.1f', 9)} "
            f"{_num(r['simulated_reads_per_token'], '.0f', 11)} "
            f"{_num(r['simulated_hit_rate'], '.3f', 8)} {_num(r['simulated_io_share'], '.0%', 8)}"
        )
    return "\n".join(lines)


def _notes(notes: list[str]) -> list[str]:
    return [f"  note: {n}" for n in notes]


def format_reproduction(result: dict) -> str:
    """Every table of :func:`reproduce` as text, each header saying SIMULATED, notes below."""
    s = result["summary"]
    lines = [
        "PowerInfer-2 reproduction: every figure SIMULATED (pi2lab.plan.simulator on built-in "
        "device profiles); no phone was used",
        f"paper figures from {SOURCE}",
        "",
        format_decode_table(result["decode_oneplus12"]),
        *_notes(result["decode_oneplus12"]["notes"]),
        "",
        format_ablation(result["ablation"]),
        *_notes(result["ablation"]["notes"]),
        "",
        format_memory_sweep(result["memory_sweep"]),
        *_notes(result["memory_sweep"]["notes"]),
        "",
        format_decode_table(result["decode_oneplus_ace2"]),
        *_notes(result["decode_oneplus_ace2"]["notes"]),
        "",
        f"Targets (SIMULATED): PowerInfer-2 within +-25% of the paper: "
        f"{s['powerinfer2_within_25pct']}/{s['powerinfer2_rows']}; speed-up over llama.cpp "
        f"within +-35%: {s['over_llama_cpp_met']}/{s['speedup_rows']}; over LLM in a Flash "
        "within +-35%: "
        f"{s['over_llmflash_met']}/{s['speedup_rows']}; ablation monotone: "
        f"{s['ablation_monotone']}",
    ]
    return "\n".join(lines)
