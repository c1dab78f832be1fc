"""The ``pi2lab`` command line. Bad input prints one line and exits with status 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pi2lab.budget import MemoryBudget
from pi2lab.errors import ConfigError, Pi2labError


def _cmd_train(args) -> int:
    from pi2lab.train.bundled import train_bundled, write_card
    from pi2lab.train.loop import TrainConfig

    tc = TrainConfig(
        steps=args.steps,
        time_budget_s=args.time_budget,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        target_sparsity=args.target_sparsity,
        seed=args.seed,
        eval_every=args.eval_every,
    )
    if args.card_only:
        card = write_card(Path(args.out))
    else:
        card = train_bundled(Path(args.out), tc, vocab_size=args.vocab_size)
    summary = {
        "out": args.out,
        **card["held_out"],
        "mean_sparsity": sum(card["sparsity"]["sparsity_per_layer"])
        / len(card["sparsity"]["sparsity_per_layer"]),
    }
    print(json.dumps(summary, indent=None if args.json else 2))
    return 0


def _load_for_engine(name: str, engine: str, threshold: float, cluster_size: int | None = None):
    """The model, and for the sparse engine its decoder: trained predictors when the model
    directory has them (``cluster_size`` replacing the saved plan's), else the oracle (exact,
    no speed-up), which is said on stderr."""
    from pi2lab.engine.sparse import SparseDecoder
    from pi2lab.model.pretrained import load_pretrained, resolve
    from pi2lab.predict.predictor import PREDICTORS_FILE
    from pi2lab.predict.sparsify import load_sparse

    if engine == "dense":
        return load_pretrained(name), None
    if (resolve(name) / PREDICTORS_FILE).is_file():
        return load_sparse(name, threshold=threshold, cluster_size=cluster_size)
    model = load_pretrained(name)
    print(
        f"pi2lab: {PREDICTORS_FILE} not found beside the model; sparse decode uses the oracle "
        "predictor",
        file=sys.stderr,
    )
    return model, SparseDecoder.oracle(model.config)


def memory_budget(text: str) -> MemoryBudget:
    """``0.5`` or ``50%`` (share of the FFN bytes), or bytes with a unit: ``2GB``, ``512MiB``."""
    try:
        return MemoryBudget.parse(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _cmd_generate(args) -> int:
    from pi2lab.engine.generate import generate
    from pi2lab.engine.offload import ENGINES, OffloadConfig, OffloadEngine

    if args.engine in ENGINES:
        config = OffloadConfig(
            engine=args.engine, memory_budget=args.memory_budget, threshold=args.threshold
        )
        with OffloadEngine(args.model, config) as eng:
            return _print_generation(
                args, generate(eng, args.prompt, engine=args.engine, **_sampling(args))
            )
    model, sparse = _load_for_engine(args.model, args.engine, args.threshold, args.cluster_size)
    return _print_generation(
        args, generate(model, args.prompt, engine=args.engine, sparse=sparse, **_sampling(args))
    )


def _sampling(args) -> dict:
    return dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )


def _print_generation(args, res) -> int:
    if args.json:
        print(json.dumps(res.to_json()))
    else:
        print(args.prompt + res.text)
        print(
            f"\n[{res.tokens.size} tokens, decode {res.decode_tokens_per_s:.1f} tokens/s, "
            f"prefill {res.prefill_s * 1e3:.0f} ms incl. compile, stop: {res.stop_reason}]"
        )
    return 0


def _cmd_profile(args) -> int:
    from pi2lab.model.pretrained import load_pretrained
    from pi2lab.predict.profile import profile
    from pi2lab.train.corpus import corpus_tokens

    model = load_pretrained(args.model)
    tokens = corpus_tokens(model, args.split, args.tokens)
    trace = profile(model, tokens, source=f"stdlib docstrings, {args.split} split")
    path = trace.save(args.out)
    sparsity = trace.sparsity()
    summary = {
        "out": str(path),
        "tokens": trace.num_tokens,
        "bytes": path.stat().st_size,
        "sparsity_per_layer": [round(float(s), 4) for s in sparsity],
    }
    print(json.dumps(summary))
    return 0


def _cmd_train_predictors(args) -> int:
    from pi2lab.model.pretrained import load_pretrained, resolve
    from pi2lab.predict.predictor import PredictorConfig
    from pi2lab.predict.sparsify import report_table, sparsify
    from pi2lab.train.corpus import corpus_tokens

    model = load_pretrained(args.model)
    tokens = corpus_tokens(model, "train", args.tokens)
    pc = PredictorConfig(steps=args.steps, energy=args.energy)
    result = sparsify(
        model,
        tokens,
        pc=pc,
        cluster_size=args.cluster_size,
        hot_min_frequency=args.hot_min_frequency,
    )
    out = result.save(args.out or resolve(args.model))
    if args.json:
        print(
            json.dumps({"out": str(out), **result.predictors.report, "plan": result.plan.to_json()})
        )
    else:
        print(f"wrote {out}\n" + report_table(result.predictors, result.plan))
    return 0


def _cmd_fidelity(args) -> int:
    from pi2lab.predict.fidelity import fidelity
    from pi2lab.train.corpus import corpus_tokens

    model, sparse = _load_for_engine(args.model, "sparse", 0.0, args.cluster_size)
    tokens = corpus_tokens(model, "held_out", args.sequences * args.length)
    seqs = [tokens[i * args.length : (i + 1) * args.length] for i in range(args.sequences)]
    rows = fidelity(model, sparse, seqs, args.thresholds)
    if args.json:
        print(json.dumps({"tokens": int(sum(s.size for s in seqs)), "rows": rows}))
    else:
        print("threshold  ppl dense  ppl sparse  increase  greedy agreement  clusters computed")
        for r in rows:
            print(
                f"{r['threshold']:>9.2f}  {r['perplexity_dense']:>9.2f}  "
                f"{r['perplexity_sparse']:>10.2f}  {r['perplexity_increase']:>+8.2%}  "
                f"{r['greedy_agreement']:>16.3f}  {r['cold_clusters_computed']:>17.3f}"
            )
    return 0


def _cmd_info(args) -> int:
    from pi2lab.model.info import model_info

    summary = model_info(args.model)
    if args.kernels:
        from pi2lab.kernels.ffi import kernel_status

        summary = {**summary, **{f"kernel {k}": v for k, v in kernel_status().items()}}
    if args.sparse:
        from pi2lab.predict.sparsify import load_sparse

        model, sparse = load_sparse(args.model, cluster_size=args.cluster_size)
        memory = sparse.memory(model.params)
        summary = {
            **summary,
            "sparse decoder": repr(sparse),
            **{f"sparse {k[:-6]} MB": round(v / 1e6, 2) for k, v in memory.items()},
        }
    _print_summary(summary, args.json, width=22)
    return 0


def _print_summary(summary: dict, as_json: bool, width: int) -> None:
    """One JSON object, or one ``key: value`` line per entry."""
    if as_json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>{width}}: {value}")


def _cmd_bench(args) -> int:
    from pi2lab import bench

    extra = {"profile": args.profile} if args.what == "planner" else {}
    result = bench.run(args.what, quick=args.quick, steps=args.steps, layers=args.layers, **extra)
    print(json.dumps(result) if args.json else bench.format_table(result))
    return 0


def _cmd_convert(args) -> int:
    from pi2lab.convert import convert_pretrained
    from pi2lab.storage.layout import open_layout

    out = convert_pretrained(
        args.model,
        args.out,
        dtype=args.dtype,
        cluster_size=args.cluster_size,
        group_size=args.group_size,
    )
    _print_layout(open_layout(out), args.json)
    return 0


def _cmd_verify(args) -> int:
    from pi2lab.storage.layout import verify

    _print_layout(verify(args.dir), args.json)
    return 0


def _print_layout(layout, as_json: bool) -> None:
    summary = {
        "path": str(layout.path),
        "dtype": layout.dtype,
        "cluster_size": layout.cluster_size,
        "unit_bytes": layout.unit_bytes,
        "stride": layout.stride,
        "bundle_files": len(layout.files),
        "ffn_bytes": layout.ffn_bytes,
        "resident_bytes": (layout.path / "resident.safetensors").stat().st_size,
        "has_plan": layout.plan is not None,
        "ok": True,
    }
    _print_summary(summary, as_json, width=15)


def _cmd_plan(args) -> int:
    from pi2lab.plan.cost import PlanChoice, calibrate
    from pi2lab.plan.measure import measure
    from pi2lab.plan.phones import resolve_profile
    from pi2lab.plan.planner import plan
    from pi2lab.plan.stats import default_prompts, layout_stats, record_requests
    from pi2lab.storage.layout import open_layout

    layout = open_layout(args.model)
    profile = resolve_profile(args.profile) if args.profile else measure(quick=True)
    masks, resident_s = record_requests(layout, default_prompts(layout), args.tokens)
    stats = calibrate(layout_stats(layout, masks), profile, resident_s, PlanChoice())
    budget = args.memory_budget
    chosen = plan(
        stats,
        profile,
        budget,
        cpu_threads=args.cpu_threads,
        min_tokens_per_s=args.min_tokens_per_s,
        gate_first=layout.cluster_size == 1,
    )
    out = {
        "profile": profile.name,
        "resident_tokens_per_s": round(1 / resident_s, 2),
        **chosen.to_json(),
    }
    _print_summary(out, args.json, width=24)
    return 0


def _cmd_profile_hw(args) -> int:
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


def _cmd_reproduce(args) -> int:
    from pi2lab.plan.reproduce import reproduce
    from pi2lab.plan.tables import format_reproduction

    result = reproduce(quick=args.quick, tokens=args.tokens)
    print(json.dumps(result) if args.json else format_reproduction(result))
    return 0


def _cmd_simulate(args) -> int:
    from pi2lab.plan.phones import resolve_profile
    from pi2lab.plan.shapes import get_shape
    from pi2lab.plan.simulator import simulate_decode

    profile, shape = resolve_profile(args.device), get_shape(args.model)
    if args.memory_gb is not None:
        budget = {"memory_bytes": int(args.memory_gb * 1e9)}
        what = f"{args.memory_gb:g} GB budget"
    else:
        flash = 0.5 if args.ffn_on_flash is None else args.ffn_on_flash
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
    st = r.stage_seconds
    rows = {
        "simulated tokens/s": f"{r.tokens_per_s:.2f}",
        "memory used": f"{r.memory_bytes / 1e9:.2f} GB (usable {profile.ram_bytes / 1e9:g} GB)",
        "cache hit rate": f"{r.hit_rate:.3f}",
        "read per token": f"{r.bytes_per_token / 1e6:.1f} MB",
        "I/O wait share": f"{r.io_share:.3f}",
        "ms/token by stage": ", ".join(f"{k} {v * 1e3:.1f}" for k, v in st.items()),
    }
    for key, value in rows.items():
        print(f"{key:>20}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pi2lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

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
    _cluster_size_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("profile", help="record FFN activation traces over the corpus")
    p.add_argument("--model", default="builtin")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--split", choices=["train", "held_out"], default="held_out")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser(
        "train-predictors", help="reorder neurons hot-first, plan clusters, train predictors"
    )
    p.add_argument("--model", default="builtin")
    p.add_argument("--tokens", type=int, default=60000)
    p.add_argument("--out", default=None, help="default: rewrite the model directory")
    p.add_argument("--steps", type=int, default=1500, help="optimiser steps per layer")
    p.add_argument("--energy", type=float, default=0.9, help="rank choice, see predictor.py")
    p.add_argument("--cluster-size", type=int, default=16)
    p.add_argument("--hot-min-frequency", type=float, default=0.3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_train_predictors)

    p = sub.add_parser("fidelity", help="sparse decode against dense on held-out text")
    p.add_argument("--model", default="builtin")
    p.add_argument("--sequences", type=int, default=8)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--thresholds", type=float, nargs="+", default=[-1.0, 0.0, 1.0])
    _cluster_size_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_fidelity)

    p = sub.add_parser("info", help="architecture, shapes, parameters and bytes by component")
    p.add_argument("--model", default="builtin")
    p.add_argument("--kernels", action="store_true", help="which sparse FFN kernel runs, and why")
    p.add_argument(
        "--sparse", action="store_true", help="memory of the sparse model and its predictors"
    )
    _cluster_size_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("train", help="train the bundled dReLU model (corpus, tokenizer, card)")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--time-budget", type=float, default=3600.0, help="seconds")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--target-sparsity", type=float, default=0.9)
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument(
        "--card-only",
        action="store_true",
        help="re-measure and rewrite the model card of the model in --out",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("convert", help="write a model's flash layout (resident part + bundles)")
    p.add_argument("--model", default="builtin")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=["f32", "f16", "int8", "int4"], default="f32")
    p.add_argument(
        "--cluster-size", type=int, default=None, help="neurons per read unit (default: 4 KiB fit)"
    )
    p.add_argument("--group-size", type=int, default=64, help="elements per quantization scale")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("verify", help="check a flash layout: header, sizes, checksums")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("bench", help="benchmarks (print figures; --json for one JSON object)")
    p.add_argument("what", choices=["dense", "sparse", "offload", "planner", "peer"])
    p.add_argument("--profile", default=None, help="planner: hardware profile (default: measure)")
    p.add_argument("--quick", action="store_true", help="fewer steps and layers (smoke runs)")
    p.add_argument("--steps", type=int, default=None, help="decode steps per measurement")
    p.add_argument("--layers", type=int, default=None, help="layers of the synthetic 7B model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("plan", help="the fastest execution plan for a flash layout and budget")
    p.add_argument("--model", required=True, help="a `pi2lab convert` directory")
    p.add_argument("--memory-budget", type=memory_budget, required=True)
    p.add_argument("--profile", default=None, help="built-in name or JSON file (default: measure)")
    p.add_argument("--cpu-threads", type=int, default=None)
    p.add_argument("--min-tokens-per-s", type=float, default=None)
    p.add_argument("--tokens", type=int, default=16, help="decode tokens per recorded prompt")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_plan)

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
    p.set_defaults(func=_cmd_profile_hw)

    p = sub.add_parser(
        "reproduce", help="the paper's results tables, simulated on the built-in phone profiles"
    )
    p.add_argument("--quick", action="store_true", help="8 tokens per run, 3 sweep points")
    p.add_argument("--tokens", type=int, default=None, help="tokens per run (overrides)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_reproduce)

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
    p.set_defaults(func=_cmd_simulate)
    return parser


def _cluster_size_flag(p) -> None:
    p.add_argument(
        "--cluster-size",
        type=int,
        default=None,
        help="sparse engine: neurons per cold cluster (default: the saved plan's; 1 computes "
        "exactly the predicted neurons)",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Pi2labError as e:
        print(f"pi2lab {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
