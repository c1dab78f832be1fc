"""``pi2lab bench``: speed measured on this machine, side by side in one run.

Every bench returns one dict (``--json`` prints it) holding every figure, with the machine
described, so sweeps and scripts can read it.
"""

from __future__ import annotations

import platform

import jax


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": len(jax.devices()),
    }


def run(what: str, **kwargs) -> dict:
    from pi2lab.bench import dense, sparse

    benches = {"dense": dense.bench_dense, "sparse": sparse.bench_sparse}
    return benches[what](**{k: v for k, v in kwargs.items() if v is not None})


def format_table(result: dict) -> str:
    lines = [
        f"pi2lab bench {result['bench']}  ({result['machine']['backend']}, "
        f"jax {result['machine']['jax']})"
    ]
    for name, row in result.items():
        if isinstance(row, dict) and "tokens_per_s" in row:
            lines.append(
                f"  {name:<14} {row['tokens_per_s']:>9.2f} tokens/s   "
                f"{row['weight_mb_per_token']:>8.1f} MB weights/token   "
                f"{row['implied_gb_per_s']:>5.1f} GB/s implied   "
                f"(runs: {row['runs_tokens_per_s']})"
            )
        elif isinstance(row, dict) and "summary" in row:
            lines.append(f"  {name}: {row['summary']}")
    return "\n".join(lines)
