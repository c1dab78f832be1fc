"""``pi2lab reproduce`` and ``simulate``: phone-scale decode on the trace-driven simulator
(simulated, not measured)."""

from __future__ import annotations

import json
import math

from pi2lab.cli.common import print_summary
from pi2lab.errors import ConfigError


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="the paper's results tables, simulated on the built-in phone profiles"
    )
    p.add_argument("--quick", action="store_true", help="8 tokens per run, 3 sweep points")
    p.add_argument("--tokens", type=int, default=None, help="tokens per run (overrides)")
    p.add_argument(
        "--gains",
        action="store_true",
        help="only the offload storage choices (bundle dtype, co-activation placement)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_reproduce)

    p = sub.add_parser("simulate", help="one simulated decode configuration (not measured)")
    p.add_argument("--device", default="oneplus12", help="built-in profile or JSON file")
    p.add_argument("--model", default="turbosparse-mistral-7b", help="built-in model shape")
    p.add_argument("--engine", choices=["powerinfer2", "llmflash", "llama.cpp-mmap"])
    p.set_defaults(engine="powerinfer2")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--memory-gb", type=float, default=None, help="total budget, 1e9 bytes")
    budget.add_argument(
        "--ffn-on-flash", type=float, default=None, help="share of FFN left on flash (0.5)"
    )
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_simulate)


def run_reproduce(args) -> int:
    from pi2lab.plan.reproduce import offload_gains, reproduce
    from pi2lab.plan.tables import format_offload_gains, format_reproduction

    if args.gains:
        tokens = args.tokens or (8 if args.quick else 32)
        result = offload_gains(tokens=tokens)
        text = format_offload_gains(result) + "".join(f"\n  note: {n}" for n in result["notes"])
        print(json.dumps(result) if args.json else text)
        return 0
    result = reproduce(quick=args.quick, tokens=args.tokens)
    print(json.dumps(result) if args.json else format_reproduction(result))
    return 0


def run_simulate(args) -> int:
    from pi2lab.plan.phones import resolve_profile
    from pi2lab.plan.shapes import get_shape
    from pi2lab.plan.simulator import simulate_decode

    profile, shape = resolve_profile(args.device), get_shape(args.model)
    # the budget flags as simulate_decode takes them, and as the report names them
    if args.memory_gb is not None:
        if not math.isfinite(args.memory_gb):
            raise ConfigError(f"memory_gb={args.memory_gb}: expected a finite number of GB")
        budget = {"memory_bytes": int(args.memory_gb * 1e9)}
        what = f"{args.memory_gb:g} GB budget"
    else:
        flash = 0.5 if args.ffn_on_flash is None else args.ffn_on_flash
        if not 0 <= flash <= 1:
            raise ConfigError(f"ffn_on_flash={flash}: expected a share in [0, 1]")
        budget = {"ffn_fraction": 1.0 - flash}
        what = f"{flash:.0%} of FFN on flash"
    r = simulate_decode(shape, profile, engine=args.engine, tokens=args.tokens, **budget)
    if args.json:
        out = {k: v for k, v in r.to_json().items() if k != "timeline"}
        print(json.dumps({**out, "budget": what}))
        return 0
    print(
        f"SIMULATED, not measured: {r.engine} on {r.profile}, {r.shape}, {what}, "
        f"{args.tokens} tokens"
    )
    rows = {
        "simulated tokens/s": f"{r.tokens_per_s:.2f}",
        "memory used": f"{r.memory_bytes / 1e9:.2f} GB (usable {profile.ram_bytes / 1e9:g} GB)",
        "cache hit rate": f"{r.hit_rate:.3f}",
        "read per token": f"{r.bytes_per_token / 1e6:.1f} MB",
        "I/O wait share": f"{r.io_share:.3f}",
        "ms/token by stage": ", ".join(f"{k} {v * 1e3:.1f}" for k, v in r.stage_seconds.items()),
    }
    print_summary(rows, False, width=20)
    return 0
