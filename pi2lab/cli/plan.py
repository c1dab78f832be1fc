"""``pi2lab plan`` and ``profile-hw``: the fastest execution plan for a flash layout and a
memory budget, and the hardware profile it is solved for."""

from __future__ import annotations

import json

from pi2lab.cli.common import memory_budget, print_summary


def add_parsers(sub) -> None:
    p = sub.add_parser("plan", help="the fastest execution plan for a flash layout and budget")
    p.add_argument("--model", required=True, help="a `pi2lab convert` directory")
    p.add_argument("--memory-budget", type=memory_budget, required=True)
    p.add_argument("--profile", default=None, help="built-in name or JSON file (default: measure)")
    p.add_argument("--cpu-threads", type=int, default=None)
    p.add_argument("--min-tokens-per-s", type=float, default=None)
    p.add_argument("--tokens", type=int, default=16, help="decode tokens per recorded prompt")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_plan)

    p = sub.add_parser(
        "profile-hw", help="measure this machine's hardware profile, or --show a built-in one"
    )
    p.add_argument("--out", default=None, help="write the profile as JSON (atomically)")
    p.add_argument("--quick", action="store_true", help="smaller arrays and files (smoke runs)")
    p.add_argument(
        "--storage-file",
        default=None,
        help="file to read for storage figures (default: a temporary file in the bench dir)",
    )
    p.add_argument(
        "--show", default=None, help="a built-in profile (oneplus12, oneplus-ace2) or a JSON file"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_profile_hw)


def run_plan(args) -> int:
    from pi2lab.plan.measure import measure
    from pi2lab.plan.phones import resolve_profile
    from pi2lab.plan.stats import plan_layout
    from pi2lab.storage.layout import open_layout

    layout = open_layout(args.model)
    profile = resolve_profile(args.profile) if args.profile else measure(quick=True)
    chosen, resident_s = plan_layout(
        layout,
        args.memory_budget,
        profile,
        tokens=args.tokens,
        cpu_threads=args.cpu_threads,
        min_tokens_per_s=args.min_tokens_per_s,
    )
    out = {
        "profile": profile.name,
        "resident_tokens_per_s": round(1 / resident_s, 2),
        **chosen.to_json(),
    }
    print_summary(out, args.json, width=24)
    return 0


def run_profile_hw(args) -> int:
    from pi2lab.plan.hardware import format_profile
    from pi2lab.plan.measure import measure
    from pi2lab.plan.phones import resolve_profile

    if args.show:
        profile = resolve_profile(args.show)
    else:
        profile = measure(storage_file=args.storage_file, quick=args.quick)
    if args.out:
        profile.save(args.out)
    print(json.dumps(profile.to_json(), indent=1) if args.json else format_profile(profile))
    if args.out and not args.json:
        print(f"wrote {args.out}")
    return 0
