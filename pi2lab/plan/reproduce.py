"""PowerInfer-2's results tables, re-derived with the decode simulator (every figure SIMULATED).

No phone is used: each figure comes from :func:`pi2lab.plan.simulator.simulate_decode` on a
built-in hardware profile (:func:`pi2lab.plan.hardware.builtin`, rates from the paper's published
device characteristics) and a built-in model shape (:mod:`pi2lab.plan.shapes`), and is set beside
the figure the paper reports (arXiv 2406.06282, copied into :data:`PAPER`).

Nothing here is tuned per row: every row runs the same engines with the same defaults on the same
profile, and the only inputs are the built-in profiles and shapes. Where a simulated figure misses
its target (PowerInfer-2 within +-25% of the paper, PowerInfer-2 over llama.cpp at least 15x, over
LLM in a Flash 3-5x) the result carries a one-line note naming the assumption that drives the gap,
with the numbers behind it.

Every dict returned holds ``simulated: True``; keys holding simulated figures start with
``simulated_``, the paper's with ``paper_``. Units: tokens/s, bytes (``*_gb``: 1e9 bytes).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.plan.hardware import HardwareProfile, builtin
from pi2lab.plan.shapes import get_shape
from pi2lab.plan.simulator import SimResult, simulate_decode

SOURCE = "PowerInfer-2, arXiv 2406.06282 (v1 decode tables, v3 ablation)"

MODELS: dict[str, str] = {
    "llama-7b": "Llama-7B (ReLU)",
    "llama-13b": "Llama-13B (ReLU)",
    "turbosparse-mistral-7b": "TurboSparse-Mistral-7B",
    "turbosparse-mixtral-47b": "TurboSparse-Mixtral-47B",
}
"""Decode-table models: built-in shape -> the paper's row name."""

ENGINES: dict[str, str] = {
    "powerinfer2": "PowerInfer-2",
    "llama.cpp-mmap": "llama.cpp",
    "llmflash": "LLM in a Flash",
}
"""Simulated engines -> the paper's column name."""

PAPER: dict = {
    # Decode tokens/s, OnePlus 12, 50% of FFN weights on flash (v1).
    "decode_oneplus12": {
        "llama-7b": {"powerinfer2": 11.7, "llama.cpp-mmap": 0.4, "llmflash": 2.8},
        "llama-13b": {"powerinfer2": 5.4, "llama.cpp-mmap": 0.2, "llmflash": 1.7},
        "turbosparse-mistral-7b": {"powerinfer2": 10.5, "llama.cpp-mmap": 0.4, "llmflash": 2.4},
        "turbosparse-mixtral-47b": {
            "powerinfer2": 9.96,
            "llama.cpp-mmap": 0.5,
            "llmflash": 2.4,
        },
    },
    # Bamboo-7B, OnePlus 12, 50% FFN on flash (v3), cumulative tokens/s.
    "ablation": {
        "baseline": 0.40,
        "+ neuron bundling": 1.09,
        "+ neuron cache": 4.18,
        "+ cluster pipeline": 9.60,
    },
    "ablation_hit_rate": 0.95,
    # TurboSparse-Mixtral-47B, OnePlus 12, all 19 GB available.
    "mixtral_19gb": {"powerinfer2": 11.68, "llmflash": 3.74, "llama.cpp-mmap": 0.55},
    "mixtral_half_ffn": 9.96,
    "in_memory_mistral": 12.5,  # motivation: TurboSparse-Mistral-7B in memory, OnePlus 12
    "llmflash_io_share": 0.767,  # motivation: LLM in a Flash's I/O share of latency
}
"""The paper's figures; tokens/s unless named otherwise."""

TARGETS = {"within": 0.25, "over_llama_cpp": 15.0, "over_llmflash": (3.0, 5.0)}
"""What a faithful reproduction would show (reported, never tuned toward)."""

_ABLATION_RUNGS = tuple(PAPER["ablation"])


# -- helpers -----------------------------------------------------------------------------------
def _profile(device: str | HardwareProfile) -> HardwareProfile:
    return device if isinstance(device, HardwareProfile) else builtin(device)


def _busy(r: SimResult) -> float:
    """Simulated seconds per token spent computing (attention, predictors, FFN, head)."""
    st = r.stage_seconds
    return st["attention"] + st["compute"] + st["head"]


def _diagnostics(r: SimResult, profile: HardwareProfile) -> dict:
    return {
        "simulated_hit_rate": round(r.hit_rate, 4) if r.requested.any() else None,
        "simulated_mb_per_token": round(r.bytes_per_token / 1e6, 2),
        "simulated_io_share": round(r.io_share, 4),
        "simulated_compute_only_tokens_per_s": round(1.0 / _busy(r), 3),
        "cache_units": r.cache_units,
        "memory_used_gb": round(r.memory_bytes / 1e9, 3),
        "fits_ram": r.memory_bytes <= profile.ram_bytes,
    }


_SCALES: dict[str, float] = {}


def compute_scale(profile: HardwareProfile) -> float:
    """The paper's in-memory token time for TurboSparse-Mistral-7B (1 / 12.5 tok/s) over the
    simulator's compute-only token time for it on ``profile``: how much slower the paper's
    compute is than the simulated one. A diagnostic for the gap notes, never applied to a
    figure."""
    if profile.name not in _SCALES:
        r = simulate_decode("turbosparse-mistral-7b", profile, ffn_fraction=1.0, tokens=4)
        _SCALES[profile.name] = 1.0 / PAPER["in_memory_mistral"] / _busy(r)
    return _SCALES[profile.name]


def gap_note(r: SimResult, paper: float, profile: HardwareProfile) -> str:
    """One line naming what drives the gap between a simulated figure and the paper's.

    Faster than the paper: compute is blamed when charging the row's compute at the paper's
    in-memory speed (x :func:`compute_scale`) closes at least half of the gap in token time;
    otherwise the read model is, with the read rate the paper's figure implies for the same
    bytes once compute is at that speed (bytes / (1 / paper - scaled compute time)). Slower
    than the paper: compute when compute alone is slower than the paper's figure, else the
    read model (with the simulated compute time).
    """
    busy, wait = _busy(r), r.stage_seconds["wait"]
    scale = compute_scale(profile)
    t_sim, t_paper = 1.0 / r.tokens_per_s, 1.0 / paper
    t_cal = t_sim + busy * (scale - 1)
    rates = (
        f"attention, predictors, LM head at dense_gbs {profile.dense_gbs:g} GB/s, FFN at "
        f"sparse_gbs {profile.sparse_gbs:g} GB/s"
    )
    if t_sim < t_paper and abs(t_cal - t_paper) <= 0.5 * (t_paper - t_sim):
        return (
            f"compute rates (I/O wait {r.io_share:.0%}): compute alone gives {1 / busy:.1f} tok/s "
            f"({rates}); at the paper's in-memory speed (compute x{scale:.2f}) this row would be "
            f"~{1 / t_cal:.1f} tok/s"
        )
    if t_sim > t_paper and busy >= t_paper:
        return f"compute rates: compute alone gives {1 / busy:.1f} tok/s ({rates})"
    mb = r.bytes_per_token / 1e6
    if t_sim < t_paper:
        left = t_paper - busy * scale
        compute = f"with compute at the paper's in-memory speed (x{scale:.2f}) "
    else:
        left, compute = t_paper - busy, "with the simulated compute "
    implied = f"~{mb / left:,.0f} MB/s" if left > 0 else "less than no time"
    if r.engine == "llama.cpp-mmap":
        how = f"only the over-budget FFN, sequentially at {profile.sequential_mbs:,.0f} MB/s"
    elif r.hit_rate == 0:
        how = "no cache: every predicted neuron"
    elif r.engine == "llmflash":
        how = f"Window(5) hit rate {r.hit_rate:.1%}, overlapped with hits"
    else:
        how = f"hit rate {r.hit_rate:.1%}"
    return (
        f"read model (I/O wait {r.io_share:.0%}): {mb:,.0f} MB/token read ({how}) in "
        f"{wait * 1e3:.0f} ms ({mb / max(wait, 1e-12):,.0f} MB/s exposed); {compute}the paper's "
        f"figure leaves {max(left, 0) * 1e3:.0f} ms for them: {implied}"
    )


def _row(model, engine, r: SimResult, paper, profile) -> dict:
    ratio = r.tokens_per_s / paper if paper else None
    row = {
        "simulated": True,
        "model": model,
        "model_label": MODELS.get(model, model),
        "engine": engine,
        "engine_label": ENGINES[engine],
        "simulated_tokens_per_s": round(r.tokens_per_s, 4),
        "paper_tokens_per_s": paper,
        "ratio": round(ratio, 4) if ratio is not None else None,
        **_diagnostics(r, profile),
    }
    if engine == "powerinfer2" and ratio is not None:
        row["target"] = f"within +-{TARGETS['within']:.0%} of the paper"
        row["target_met"] = abs(ratio - 1) <= TARGETS["within"]
    row["note"] = (
        gap_note(r, paper, profile) if ratio is not None and abs(ratio - 1) > 0.25 else None
    )
    return row


# -- the tables --------------------------------------------------------------------------------
def decode_table(
    device: str | HardwareProfile = "oneplus12",
    ffn_on_flash: float = 0.5,
    tokens: int = 64,
    *,
    models: Iterable[str] = tuple(MODELS),
) -> dict:
    """Simulated decode tokens/s for each model x engine, beside the paper's (OnePlus 12 only).

    PowerInfer-2 and LLM in a Flash keep ``1 - ffn_on_flash`` of every FFN's units in their
    cache (``ffn_fraction``); llama.cpp (mmap) gets the same memory in bytes as the PowerInfer-2
    run used (its ``memory_bytes``), so every engine has the same budget. Engine defaults
    otherwise (PowerInfer-2: segmented cache, cluster pipeline, one I/O thread; LLM in a Flash:
    Window(5), matrix overlap); default synthetic trace, seed 0.

    Returns ``{"simulated": True, "rows": [...], "speedups": [...], "notes": [...]}``: a row per
    model and engine (simulated, paper, ratio simulated/paper, diagnostics, a gap note where the
    ratio is off by more than 25%), a speed-up row per model (PowerInfer-2 over llama.cpp and over
    LLM in a Flash, simulated and paper).
    """
    profile = _profile(device)
    paper_table = PAPER["decode_oneplus12"] if profile.name == "oneplus12" else {}
    rows, speedups, notes = [], [], []
    fraction = 1.0 - ffn_on_flash
    for model in models:
        paper = paper_table.get(model, {})
        pi2 = simulate_decode(
            model, profile, engine="powerinfer2", ffn_fraction=fraction, tokens=tokens
        )
        runs = {
            "powerinfer2": pi2,
            "llama.cpp-mmap": simulate_decode(
                model, profile, engine="llama.cpp-mmap", memory_bytes=pi2.memory_bytes, tokens=1
            ),
            "llmflash": simulate_decode(
                model, profile, engine="llmflash", ffn_fraction=fraction, tokens=tokens
            ),
        }
        for engine, r in runs.items():
            rows.append(_row(model, engine, r, paper.get(engine), profile))
            if rows[-1]["note"]:
                notes.append(f"{MODELS[model]}, {ENGINES[engine]}: {rows[-1]['note']}")
        if not pi2.memory_bytes <= profile.ram_bytes:
            notes.append(
                f"{MODELS[model]}: the {fraction:.0%}-FFN cache needs {pi2.memory_bytes / 1e9:.2f}"
                f" GB, more than the {profile.ram_bytes / 1e9:g} GB usable on {profile.name} "
                "(8 KiB cache slots per 6 KiB int4 bundle; the paper packs 7.5 KB)"
            )
        speedups.append(_speedups(model, runs, paper, profile))
        notes += speedups[-1].pop("notes")
    if paper_table:
        scale = compute_scale(profile)
        notes.append(
            f"calibration: the simulator computes TurboSparse-Mistral-7B in memory at "
            f"{PAPER['in_memory_mistral'] * scale:.1f} tok/s (compute only) where the paper "
            f"decodes it at ~{PAPER['in_memory_mistral']} tok/s (the profile's rates were fitted "
            f"from that figure; x{scale:.2f} is what remains of the difference, a diagnostic "
            "only)"
        )
    return {
        "simulated": True,
        "table": "decode",
        "device": profile.name,
        "ffn_on_flash": ffn_on_flash,
        "tokens": tokens,
        "has_paper": bool(paper_table),
        "paper_source": SOURCE if paper_table else None,
        "rows": rows,
        "speedups": speedups,
        "notes": notes
        if paper_table
        else [
            f"the paper gives no {profile.name} results: simulated figures only",
            *notes,
        ],
    }


def _speedups(model, runs: dict, paper: dict, profile) -> dict:
    pi2 = runs["powerinfer2"].tokens_per_s
    out = {"simulated": True, "model": model, "model_label": MODELS.get(model, model), "notes": []}
    for other, key in (("llama.cpp-mmap", "over_llama_cpp"), ("llmflash", "over_llmflash")):
        sim = pi2 / runs[other].tokens_per_s
        pap = paper["powerinfer2"] / paper[other] if paper else None
        out[f"simulated_{key}"] = round(sim, 3)
        out[f"paper_{key}"] = round(pap, 3) if pap else None
        target = TARGETS[key]
        lo, hi = target if isinstance(target, tuple) else (target, math.inf)
        met = lo <= sim <= hi
        out[f"{key}_target_met"] = met
        if not met:
            r = runs[other]
            out["notes"].append(
                f"{MODELS.get(model, model)}: PowerInfer-2 / {ENGINES[other]} {sim:.1f}x "
                f"(target {f'>= {lo:g}x' if hi == math.inf else f'{lo:g}-{hi:g}x'}"
                f"{f', paper {pap:.1f}x' if pap else ''}): "
                + (
                    f"mmap simulated re-reading only the over-budget "
                    f"{r.bytes_per_token / 1e9:.2f} GB/token, sequentially at "
                    f"{profile.sequential_mbs:,.0f} MB/s (the paper: past RAM size the page "
                    "cache re-reads the whole model)"
                    if other == "llama.cpp-mmap"
                    else f"LLM in a Flash simulated waiting on reads {r.io_share:.0%} of token "
                    f"time vs the paper's {PAPER['llmflash_io_share']:.1%} I/O share (Mistral-7B)"
                )
            )
    return out


def ablation(device: str | HardwareProfile = "oneplus12", tokens: int = 64) -> dict:
    """The Bamboo-7B ladder (OnePlus 12, 50% of FFN on flash), each rung one simulator change.

    Rungs (cumulative, as the paper's; engine ``powerinfer2`` throughout, one I/O thread, the
    I/O engine's merging of adjacent requests off, so that every read is one neuron's as the
    paper describes):

    - ``baseline``: sparse compute of the predicted neurons, but no bundling: a neuron's gate
      row, up row and down column are three separate 2 KiB reads (4 KiB-aligned spans) from
      matrix-major regions (``bundled=False``); no cache (``ffn_fraction=0``: every predicted
      neuron read every token, into staging rows); no overlap (``mode="none"``: all reads of an
      FFN, then its compute).
    - ``+ neuron bundling``: one 8 KiB read per neuron (``bundled=True``); still no cache, no
      overlap.
    - ``+ neuron cache``: the segmented cache (hot region + LRU) holding 50% of each FFN's
      neurons (``ffn_fraction=0.5``); still ``mode="none"``.
    - ``+ cluster pipeline``: ``mode="cluster"`` (hits computed while misses are read, each
      read computed as it lands, 64 in flight).

    Not modelled: the paper's last rung (+ CPU/NPU together, 11.07 tok/s; the simulator has one
    compute thread and no NPU).

    Returns ``{"simulated": True, "rows": [...], "notes": [...]}``, one row per rung with the
    simulated and paper figures, the gain over the previous rung (both), and diagnostics.
    """
    profile = _profile(device)
    none = PipelineConfig(mode="none", coalesce=False)
    knobs = {
        "baseline": dict(ffn_fraction=0.0, pipeline=none, bundled=False),
        "+ neuron bundling": dict(ffn_fraction=0.0, pipeline=none),
        "+ neuron cache": dict(ffn_fraction=0.5, pipeline=none),
        "+ cluster pipeline": dict(
            ffn_fraction=0.5, pipeline=PipelineConfig(mode="cluster", coalesce=False)
        ),
    }
    rows, notes, prev = [], [], None
    for rung in _ABLATION_RUNGS:
        r = simulate_decode(
            "bamboo-7b", profile, engine="powerinfer2", tokens=tokens, **knobs[rung]
        )
        paper = PAPER["ablation"][rung]
        row = _row("bamboo-7b", "powerinfer2", r, paper, profile)
        row.pop("target", None), row.pop("target_met", None)
        row.update(
            model_label="Bamboo-7B",
            rung=rung,
            knobs={
                k: (v.mode if isinstance(v, PipelineConfig) else v) for k, v in knobs[rung].items()
            },
            simulated_gain=round(r.tokens_per_s / prev[0], 3) if prev else None,
            paper_gain=round(paper / prev[1], 3) if prev else None,
        )
        rows.append(row)
        if row["note"]:
            notes.append(f"{rung}: {row['note']}")
        prev = (r.tokens_per_s, paper)
    cache = rows[2]
    notes.append(
        f"+ neuron cache: simulated hit rate {cache['simulated_hit_rate']:.1%} vs the paper's "
        f"{PAPER['ablation_hit_rate']:.0%} (the shapes' Zipf skew 1.8 was calibrated to ~95% "
        "for an LRU at 50%)"
    )
    notes.append("+ CPU/NPU together (paper 11.07 tok/s) is not simulated: one compute thread")
    return {
        "simulated": True,
        "table": "ablation",
        "device": profile.name,
        "model": "bamboo-7b",
        "tokens": tokens,
        "paper_source": SOURCE,
        "rows": rows,
        "notes": notes,
    }


def memory_sweep(
    device: str | HardwareProfile = "oneplus12",
    model: str = "turbosparse-mixtral-47b",
    gb: Iterable[float] = range(7, 20, 2),
    tokens: int = 32,
) -> dict:
    """Simulated tokens/s against the memory budget (``gb``, 1e9 bytes) for the three engines.

    Paper points (Mixtral-47B, OnePlus 12): 11.68 / 3.74 / 0.55 tok/s at 19 GB for PowerInfer-2
    / LLM in a Flash / llama.cpp, and 9.96 for PowerInfer-2 at 50% of the FFN on flash (the paper
    gives no byte budget for it: its marker sits at the simulated 50%-FFN budget).
    """
    profile = _profile(device)
    points, notes, runs = [], [], {}
    gbs = [float(g) for g in gb]
    for g in gbs:
        for engine in ENGINES:
            r = simulate_decode(
                model,
                profile,
                engine=engine,
                memory_bytes=int(g * 1e9),
                tokens=1 if engine == "llama.cpp-mmap" else tokens,
            )
            runs[g, engine] = r
            share = r.cache_units / get_shape(model).units
            points.append(
                {
                    "simulated": True,
                    "memory_gb": g,
                    "engine": engine,
                    "engine_label": ENGINES[engine],
                    "simulated_tokens_per_s": round(r.tokens_per_s, 4),
                    "simulated_cache_share": round(share, 4),
                    **_diagnostics(r, profile),
                }
            )
    half = simulate_decode(model, profile, engine="powerinfer2", ffn_fraction=0.5, tokens=tokens)
    paper_points = []
    is_paper = profile.name == "oneplus12" and model == "turbosparse-mixtral-47b"
    if is_paper:
        for engine, paper in PAPER["mixtral_19gb"].items():
            sim = next(
                (p for p in points if p["memory_gb"] == 19.0 and p["engine"] == engine), None
            )
            ratio = sim["simulated_tokens_per_s"] / paper if sim else None
            paper_points.append(
                {
                    "simulated": True,
                    "memory_gb": 19.0,
                    "engine": engine,
                    "label": f"{ENGINES[engine]}, all 19 GB",
                    "paper_tokens_per_s": paper,
                    "simulated_tokens_per_s": sim["simulated_tokens_per_s"] if sim else None,
                    "ratio": round(ratio, 4) if ratio else None,
                }
            )
        paper_points.append(
            {
                "simulated": True,
                "memory_gb": round(half.memory_bytes / 1e9, 3),
                "engine": "powerinfer2",
                "label": "PowerInfer-2, 50% FFN on flash (at the simulated budget)",
                "paper_tokens_per_s": PAPER["mixtral_half_ffn"],
                "simulated_tokens_per_s": round(half.tokens_per_s, 4),
                "ratio": round(half.tokens_per_s / PAPER["mixtral_half_ffn"], 4),
            }
        )
        for p in paper_points:
            r = half if "50%" in p["label"] else runs.get((p["memory_gb"], p["engine"]))
            if r is not None and abs(p["ratio"] - 1) > 0.25:
                note = gap_note(r, p["paper_tokens_per_s"], profile)
                notes.append(f"{p['label']} (sim/paper {p['ratio']:.2f}): {note}")
        small = min(gbs)
        low = next(p for p in points if p["memory_gb"] == small and p["engine"] == "powerinfer2")
        notes.append(
            f"at {small:g} GB the simulated cache holds {low['simulated_cache_share']:.1%} of the "
            "FFN (paper: 1.8% at 7 GB after 1 GB non-FFN, 2.6 GB predictors, 2.7 GB scales, "
            "0.3 GB runtime)"
        )
    else:
        notes.append(f"the paper gives no {profile.name} / {model} sweep: simulated only")
    return {
        "simulated": True,
        "table": "memory_sweep",
        "device": profile.name,
        "model": model,
        "tokens": tokens,
        "paper_source": SOURCE if is_paper else None,
        "points": points,
        "paper_points": paper_points,
        "notes": notes,
    }


def reproduce(quick: bool = False, *, tokens: int | None = None) -> dict:
    """Every table: the OnePlus 12 decode table, the ablation, the Mixtral memory sweep and the
    OnePlus Ace 2 decode table (simulated only). ``quick``: 8 tokens per run and a 3-point sweep
    (7, 13, 19 GB); ``tokens`` overrides the token count of every run."""
    t_table = tokens or (8 if quick else 64)
    t_sweep = tokens or (8 if quick else 32)
    gb = (7, 13, 19) if quick else range(7, 20, 2)
    tables = {
        "decode_oneplus12": decode_table("oneplus12", tokens=t_table),
        "ablation": ablation("oneplus12", tokens=t_table),
        "memory_sweep": memory_sweep("oneplus12", gb=gb, tokens=t_sweep),
        "decode_oneplus_ace2": decode_table("oneplus-ace2", tokens=t_table),
    }
    d = tables["decode_oneplus12"]
    pi2 = [r for r in d["rows"] if r["engine"] == "powerinfer2"]
    summary = {
        "simulated": True,
        "powerinfer2_within_25pct": sum(r["target_met"] for r in pi2),
        "powerinfer2_rows": len(pi2),
        "over_llama_cpp_met": sum(s["over_llama_cpp_target_met"] for s in d["speedups"]),
        "over_llmflash_met": sum(s["over_llmflash_target_met"] for s in d["speedups"]),
        "speedup_rows": len(d["speedups"]),
        "ablation_monotone": all(
            a["simulated_tokens_per_s"] <= b["simulated_tokens_per_s"]
            for a, b in itertools.pairwise(tables["ablation"]["rows"])
        ),
    }
    return {"simulated": True, "quick": quick, **tables, "summary": summary}


# -- text --------------------------------------------------------------------------------------
def _num(x, fmt: str = ".2f", width: int = 8) -> str:
    return f"{'-' if x is None else format(x, fmt):>{width}}"


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
    lines.append(
        f"  Speed-ups of PowerInfer-2 (SIMULATED / {src})    over llama.cpp (>= 15x)   "
        "over LLM in a Flash (3-5x)"
    )
    for s in table["speedups"]:
        lines.append(
            f"  {s['model_label']:<44} {_num(s['simulated_over_llama_cpp'], '.1f', 6)}x / "
            f"{_num(s['paper_over_llama_cpp'], '.1f', 5)}x"
            f"{_num(s['simulated_over_llmflash'], '.2f', 14)}x / "
            f"{_num(s['paper_over_llmflash'], '.2f', 5)}x"
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
        f"{s['powerinfer2_within_25pct']}/{s['powerinfer2_rows']}; over llama.cpp >= 15x: "
        f"{s['over_llama_cpp_met']}/{s['speedup_rows']}; over LLM in a Flash 3-5x: "
        f"{s['over_llmflash_met']}/{s['speedup_rows']}; ablation monotone: "
        f"{s['ablation_monotone']}",
    ]
    return "\n".join(lines)


__all__ = [
    "ENGINES",
    "MODELS",
    "PAPER",
    "TARGETS",
    "ablation",
    "decode_table",
    "format_ablation",
    "format_decode_table",
    "format_memory_sweep",
    "format_reproduction",
    "gap_note",
    "memory_sweep",
    "reproduce",
]
