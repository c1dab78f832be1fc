"""Bench results as flat rows: one per engine (or configuration) and repetition, each carrying
the run's commit, machine and package versions, its repetition's tokens/s, and the mean,
standard deviation and samples of its group (as llama.cpp's ``llama-bench`` reports).

A bench returns one nested dict; :func:`rows` walks it once, here, so scripts read columns
instead of sniffing keys. A grid run (:mod:`pi2lab.bench.grid`) has a section per point, named
after its knob values (so ``compare`` pairs the same points of two runs), whose ``knobs`` become
columns of its rows. Every figure a bench measures as tokens/s becomes a group: a
section's ``engines`` (peer, offload) or ``precisions`` entries, a section that is itself one
engine (dense), a section's ``<engine>_tokens_per_s`` with its ``runs`` (sparse), a section's
``plans`` (planner: measured tokens/s beside the prediction). Samples are the bench's
repetitions where it keeps them, else the one figure it reports (``n`` says which).
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import math
import os
import subprocess
from pathlib import Path

from pi2lab.errors import ConfigError

FORMATS = ("table", "json", "csv", "md")
PACKAGES = ("pi2lab", "jax", "jaxlib", "numpy", "llama_cpp_python")
KEY = ("bench", "section", "engine")  # what identifies a group across runs


def provenance() -> dict:
    """The commit of the source tree pi2lab runs from (``-dirty`` with uncommitted changes;
    ``unknown`` outside a git checkout) and the versions of the packages that set the speed."""
    root = Path(__file__).resolve().parents[2]
    try:
        run = lambda *a: subprocess.run(
            ["git", "-C", str(root), *a], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        commit = run("rev-parse", "--short=12", "HEAD")
        if run("status", "--porcelain", "--untracked-files=no"):
            commit += "-dirty"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"commit": commit, "versions": versions}


def _samples(entry: dict) -> list[float]:
    for key in ("runs", "runs_tokens_per_s"):
        if isinstance(entry.get(key), list) and entry[key]:
            return [float(x) for x in entry[key]]
    return [float(entry["tokens_per_s"])]


def _scalars(entry: dict) -> dict:
    return {
        k: v
        for k, v in entry.items()
        if k != "tokens_per_s" and isinstance(v, (int, float, str, bool)) and v is not None
    }


def _groups(result: dict):
    """``(section, engine, entry)`` for every tokens/s figure of ``result``."""
    for section, value in result.items():
        if not isinstance(value, dict):
            continue
        if "tokens_per_s" in value:
            yield section, section, value
        for name, entry in (value.get("engines") or value.get("precisions") or {}).items():
            if isinstance(entry, dict) and "tokens_per_s" in entry:
                yield section, name, entry
        runs = value.get("runs")
        for name, samples in runs.items() if isinstance(runs, dict) else ():
            if f"{name}_tokens_per_s" in value:
                yield (
                    section,
                    name,
                    {"tokens_per_s": value[f"{name}_tokens_per_s"], "runs": samples},
                )
        plans = value.get("plans")
        for plan in plans if isinstance(plans, list) else ():
            entry = {k: v for k, v in plan.items() if k not in ("plan", "measured_tokens_per_s")}
            yield section, plan["plan"], {"tokens_per_s": plan["measured_tokens_per_s"], **entry}


def rows(result: dict) -> list[dict]:
    """Flat rows of a bench ``result`` (see the module's docstring)."""
    meta = result.get("provenance") or provenance()
    base = {
        "bench": result.get("bench"),
        "commit": meta["commit"],
        "backend": result.get("machine", {}).get("backend"),
        "platform": result.get("machine", {}).get("platform"),
        **{f"version_{k}": v for k, v in meta["versions"].items()},
    }
    out = []
    for section, engine, entry in _groups(result):
        knobs = result[section].get("knobs", {})  # a grid's point: its knobs are columns
        samples = _samples(entry)
        mean = sum(samples) / len(samples)
        sd = (
            math.sqrt(sum((x - mean) ** 2 for x in samples) / (len(samples) - 1))
            if (len(samples) > 1)
            else 0.0
        )
        for i, x in enumerate(samples):
            out.append(
                {
                    **base,
                    "section": section,
                    "engine": engine,
                    "repetition": i,
                    "tokens_per_s": x,
                    "mean_tokens_per_s": round(mean, 4),
                    "sd_tokens_per_s": round(sd, 4),
                    "n": len(samples),
                    "samples": ";".join(f"{s:g}" for s in samples),
                    **knobs,
                    **_scalars(entry),
                }
            )
    return out


def render(result: dict, fmt: str) -> str:
    """``result`` as ``json`` (one object, its rows inside), ``csv`` or ``md`` (the rows)."""
    if fmt not in FORMATS[1:]:
        raise ConfigError(f"output {fmt!r}: expected one of {', '.join(FORMATS)}")
    table = rows(result)
    if fmt == "json":
        return json.dumps({**result, "rows": table})
    columns = list(dict.fromkeys(k for r in table for k in r))
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)
        return buf.getvalue().rstrip("\n")
    cell = lambda v: "" if v is None else str(v).replace("|", "\\|")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in table]
    return "\n".join(lines)


def load(path: str | os.PathLike) -> list[dict]:
    """The rows of a bench JSON written by ``pi2lab bench ... --output json``.

    Raises:
      ConfigError: the file is missing, not JSON, or not a bench result.
    """
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(data, dict) or "bench" not in data:
        raise ConfigError(f"{path}: expected the JSON object of `pi2lab bench ... --output json`")
    return data["rows"] if isinstance(data.get("rows"), list) else rows(data)


def compare(a: list[dict], b: list[dict]) -> list[dict]:
    """Per group present in both runs: mean tokens/s of each and the ratio ``b / a``; groups
    in one run only are listed with the other side empty."""
    means = []
    for table in (a, b):
        m = {}
        for r in table:
            m.setdefault(tuple(r.get(k) for k in KEY), r["mean_tokens_per_s"])
        means.append(m)
    out = []
    for key in dict.fromkeys([*means[0], *means[1]]):
        ma, mb = means[0].get(key), means[1].get(key)
        out.append(
            {
                **dict(zip(KEY, key, strict=True)),
                "a": ma,
                "b": mb,
                "ratio": round(mb / ma, 3) if ma and mb is not None else None,
            }
        )
    return out


def format_compare(table: list[dict]) -> str:
    lines = []
    for r in table:
        ratio = "n/a (in one run only)" if r["ratio"] is None else f"{r['ratio']:.3f}x"
        a = "-" if r["a"] is None else f"{r['a']:.2f}"
        b = "-" if r["b"] is None else f"{r['b']:.2f}"
        lines.append(
            f"{r['bench']:<8} {r['section']:<26} {r['engine']:<34} {a:>9} -> {b:>9} tokens/s"
            f"  {ratio}"
        )
    return "\n".join(lines)
