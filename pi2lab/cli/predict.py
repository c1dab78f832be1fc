"""``pi2lab profile``, ``train-predictors`` and ``fidelity``: from a dense model to sparse
decode, and how close sparse decode stays to dense."""

from __future__ import annotations

import json

from pi2lab.cli.common import cluster_size_flag, load_for_engine


def add_parsers(sub) -> None:
    p = sub.add_parser("profile", help="record FFN activation traces over the corpus")
    p.add_argument("--model", default="builtin")
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--split", choices=["train", "held_out"], default="held_out")
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_profile)

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
    p.set_defaults(func=run_train_predictors)

    p = sub.add_parser("fidelity", help="sparse decode against dense on held-out text")
    p.add_argument("--model", default="builtin")
    p.add_argument("--sequences", type=int, default=8)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--thresholds", type=float, nargs="+", default=[-1.0, 0.0, 1.0])
    p.add_argument(
        "--weights",
        nargs="+",
        choices=["int8", "int4"],
        default=[],
        help="also the dense model quantized to these against float: perplexity change and "
        "greedy agreement on the same text",
    )
    cluster_size_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_fidelity)


def run_profile(args) -> int:
    from pi2lab.model.pretrained import load_pretrained
    from pi2lab.predict.profile import record_trace
    from pi2lab.train.corpus import corpus_tokens

    model = load_pretrained(args.model)
    tokens = corpus_tokens(model, args.split, args.tokens)
    source = f"stdlib docstrings, {args.split} split"
    print(json.dumps(record_trace(model, tokens, args.out, source=source)))
    return 0


def run_train_predictors(args) -> int:
    from pi2lab.model.pretrained import load_pretrained, resolve
    from pi2lab.predict.predictor import PredictorConfig
    from pi2lab.predict.sparsify import report_table, sparsify
    from pi2lab.train.corpus import corpus_tokens

    pc = PredictorConfig(steps=args.steps, energy=args.energy)
    model = load_pretrained(args.model)
    tokens = corpus_tokens(model, "train", args.tokens)
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


def run_fidelity(args) -> int:
    from pi2lab.predict.fidelity import fidelity, format_fidelity
    from pi2lab.train.corpus import corpus_sequences

    model, sparse = load_for_engine(args.model, "sparse", 0.0, args.cluster_size)
    seqs = corpus_sequences(model, "held_out", args.sequences, args.length)
    rows = fidelity(model, sparse, seqs, args.thresholds)
    quantized = {}
    if args.weights:
        from pi2lab.model.pretrained import load_pretrained
        from pi2lab.predict.fidelity import quantization_fidelity

        copies = {k: load_pretrained(args.model, weights=k) for k in args.weights}
        quantized = quantization_fidelity(load_pretrained(args.model), copies, seqs)
    if args.json:
        out = {"tokens": int(sum(s.size for s in seqs)), "rows": rows}
        print(json.dumps(out | ({"quantized": quantized} if quantized else {})))
        return 0
    print(format_fidelity(rows))
    for kind in args.weights:
        q = quantized[kind]
        print(
            f"{kind}: perplexity {q['perplexity']:.4f} against float "
            f"{quantized['perplexity_float']:.4f} ({q['perplexity_increase']:+.2%}), greedy "
            f"agreement {q['greedy_agreement']:.1%} over {quantized['tokens']} tokens"
        )
    return 0
