"""``pi2lab generate``: text from a model, by dense, sparse or offloaded decode."""

from __future__ import annotations

import dataclasses
import json

from pi2lab.cli.common import cluster_size_flag, load_for_engine, memory_budget


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="generate text (dense, sparse or offloaded decode)")
    p.add_argument(
        "--model", default="builtin", help="model; for offload engines a `pi2lab convert` dir"
    )
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--engine",
        choices=["dense", "sparse", "powerinfer2", "llmflash", "dense-stream"],
        default="dense",
    )
    p.add_argument(
        "--memory-budget",
        type=memory_budget,
        default=0.5,
        help="offload engines: FFN share (0.5) or total bytes (2GB, 512MiB, 123456)",
    )
    p.add_argument(
        "--threshold", type=float, default=0.0, help="predictor logit threshold (sparse engine)"
    )
    p.add_argument(
        "--prefetch",
        type=int,
        default=None,
        help="offload engines: cross-layer prefetch depth in layers (0 = off, the default)",
    )
    cluster_size_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from pi2lab.engine.generate import generate
    from pi2lab.engine.offload import ENGINES, OffloadConfig
    from pi2lab.errors import ConfigError

    pipeline = None
    if args.prefetch is not None:
        if args.engine not in ENGINES:
            raise ConfigError(f"--prefetch: applies to the offload engines, not {args.engine}")
        default = OffloadConfig(engine=args.engine).pipeline_config()
        pipeline = dataclasses.replace(default, prefetch=args.prefetch)
    if args.engine in ENGINES:  # an offload engine opens the layout directory itself
        model, sparse = args.model, None
    else:
        model, sparse = load_for_engine(args.model, args.engine, args.threshold, args.cluster_size)
    res = generate(
        model,
        args.prompt,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        engine=args.engine,
        sparse=sparse,
        memory_budget=args.memory_budget,
        threshold=args.threshold,
        pipeline=pipeline,
    )
    if args.json:
        print(json.dumps(res.to_json()))
    else:
        print(args.prompt + res.text)
        print(
            f"\n[{res.tokens.size} tokens, decode {res.decode_tokens_per_s:.1f} tokens/s, "
            f"prefill {res.prefill_s * 1e3:.0f} ms incl. compile, stop: {res.stop_reason}]"
        )
    return 0
