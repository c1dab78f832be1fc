"""PowerInfer-2's results tables, re-derived with the decode simulator (every figure SIMULATED).

No phone is used: each figure comes from :func:`pi2lab.plan.simulator.simulate_decode` on a
built-in hardware profile (:func:`pi2lab.plan.phones.builtin`, rates from the paper's published
device characteristics) and a built-in model shape (:mod:`pi2lab.plan.shapes`), and is set beside
the figure the paper reports (arXiv 2406.06282, :data:`pi2lab.plan.paper.PAPER`).

Nothing here is tuned per row: every row runs the same engines with the same defaults on the same
profile, and the only inputs are the built-in profiles and shapes. Where a simulated figure misses
its target (PowerInfer-2 within +-25% of the paper, its speed-ups over llama.cpp and LLM in a
Flash within +-35% of the paper's) the result carries a one-line note naming the assumption that
drives the gap, with the numbers behind it.

Every dict returned holds ``simulated: True``; keys holding simulated figures start with
``simulated_``, the paper's with ``paper_``. Units: tokens/s, bytes (``*_gb``: 1e9 bytes).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from pi2lab.pipeline.scheduler import PipelineConfig
from pi2lab.plan.gaps import busy_seconds, compute_scale, gap_note
from pi2lab.plan.hardware import HardwareProfile
from pi2lab.plan.paper import ENGINES, MODELS, PAPER, SOURCE, TARGETS
from pi2lab.plan.phones import builtin
from pi2lab.plan.shapes import get_shape
from pi2lab.plan.simulator import SimResult, simulate_decode

_ABLATION_RUNGS = tuple(PAPER["ablation"])


# -- helpers -----------------------------------------------------------------------------------
def _profile(device: str | HardwareProfile) -> HardwareProfile:
    return device if isinstance(device, HardwareProfile) else builtin(device)


def _diagnostics(r: SimResult, profile: HardwareProfile) -> dict:
    return {
        "simulated_hit_rate": round(r.hit_rate, 4) if r.requested.any() else None,
        "simulated_mb_per_token": round(r.bytes_per_token / 1e6, 2),
        "simulated_io_share": round(r.io_share, 4),
        "simulated_compute_only_tokens_per_s": round(1.0 / busy_seconds(r), 3),
        "cache_units": r.cache_units,
        "memory_used_gb": round(r.memory_bytes / 1e9, 3),
        "fits_ram": r.memory_bytes <= profile.ram_bytes,
    }


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
                model,
                profile,
                engine="llama.cpp-mmap",
                memory_bytes=pi2.memory_bytes,
                tokens=tokens,
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
    resident = in_memory(profile) if paper_table else None
    if paper_table:
        scale = compute_scale(profile)
        notes.append(
            f"calibration: the simulator computes TurboSparse-Mistral-7B in memory at "
            f"{PAPER['in_memory_mistral'] * scale:.1f} tok/s (compute only) where the paper "
            f"decodes it at ~{PAPER['in_memory_mistral']} tok/s (the profile's rates were fitted "
            f"from that figure; x{scale:.2f} is what remains of the difference, a diagnostic "
            "only)"
        )
        notes.append(
            f"in memory, TurboSparse-Mistral-7B: PowerInfer-2 "
            f"{resident['simulated_powerinfer2_tokens_per_s']:.1f} / llama.cpp "
            f"{resident['simulated_llama_cpp_tokens_per_s']:.1f} tok/s = "
            f"{resident['simulated_over_llama_cpp']:.2f}x simulated, where the paper reports "
            f"{resident['paper_over_llama_cpp']}x in-memory decode over llama.cpp (model not "
            "named there; llama.cpp computes every weight at the same fitted rate)"
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
        "in_memory": resident,
        "notes": notes
        if paper_table
        else [
            f"the paper gives no {profile.name} results: simulated figures only",
            *notes,
        ],
    }


def in_memory(
    device: str | HardwareProfile = "oneplus12", model: str = "turbosparse-mistral-7b"
) -> dict:
    """The mostly-resident check: PowerInfer-2 (every FFN unit resident, compute only) and
    llama.cpp (a page cache holding the whole file, after its first token) in memory, beside
    the paper's in-memory figures (12.5 tok/s for TurboSparse-Mistral-7B; 2.24x over
    llama.cpp)."""
    profile = _profile(device)
    pi2 = simulate_decode(model, profile, engine="powerinfer2", ffn_fraction=1.0, tokens=4)
    cpp = simulate_decode(
        model, profile, engine="llama.cpp-mmap", ffn_fraction=1.0, tokens=3, warmup=1
    )
    fast = 1.0 / busy_seconds(pi2)
    return {
        "simulated": True,
        "model": model,
        "simulated_powerinfer2_tokens_per_s": round(fast, 3),
        "paper_powerinfer2_tokens_per_s": PAPER["in_memory_mistral"],
        "simulated_llama_cpp_tokens_per_s": round(cpp.tokens_per_s, 3),
        "simulated_over_llama_cpp": round(fast / cpp.tokens_per_s, 3),
        "paper_over_llama_cpp": PAPER["in_memory_over_llama_cpp"],
    }


def _speedups(model, runs: dict, paper: dict, profile) -> dict:
    pi2 = runs["powerinfer2"].tokens_per_s
    out = {"simulated": True, "model": model, "model_label": MODELS.get(model, model), "notes": []}
    within = TARGETS["speedup_within"]
    for other, key in (("llama.cpp-mmap", "over_llama_cpp"), ("llmflash", "over_llmflash")):
        sim = pi2 / runs[other].tokens_per_s
        pap = paper["powerinfer2"] / paper[other] if paper else None
        ratio = sim / pap if pap else None
        out[f"simulated_{key}"] = round(sim, 3)
        out[f"paper_{key}"] = round(pap, 3) if pap else None
        out[f"{key}_ratio"] = round(ratio, 4) if ratio is not None else None
        met = abs(ratio - 1) <= within if ratio is not None else None
        out[f"{key}_target_met"] = met
        if met is False:
            r = runs[other]
            out["notes"].append(
                f"{MODELS.get(model, model)}: PowerInfer-2 / {ENGINES[other]} {sim:.1f}x, paper "
                f"{pap:.1f}x (sim/paper {ratio:.2f}, target within +-{within:.0%}): "
                + (
                    f"mmap simulated re-reading {r.bytes_per_token / 1e9:.2f} GB/token "
                    f"(page-cache hit rate {r.hit_rate:.1%}) by 128 KiB faults on the compute "
                    f"threads, {r.io_share:.0%} of token time"
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
                tokens=tokens,
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
        "over_llama_cpp_met": sum(s["over_llama_cpp_target_met"] is True for s in d["speedups"]),
        "over_llmflash_met": sum(s["over_llmflash_target_met"] is True for s in d["speedups"]),
        "speedup_rows": len(d["speedups"]),
        "ablation_monotone": all(
            a["simulated_tokens_per_s"] <= b["simulated_tokens_per_s"]
            for a, b in itertools.pairwise(tables["ablation"]["rows"])
        ),
    }
    return {"simulated": True, "quick": quick, **tables, "summary": summary}
