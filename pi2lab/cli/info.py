"""``pi2lab info``: a model's architecture, shapes, parameters and bytes by component; which
sparse kernel runs; the memory of the sparse model."""

from __future__ import annotations

from pi2lab.cli.common import cluster_size_flag, print_summary


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="architecture, shapes, parameters and bytes by component")
    p.add_argument("--model", default="builtin")
    p.add_argument("--kernels", action="store_true", help="which sparse FFN kernel runs, and why")
    p.add_argument(
        "--sparse", action="store_true", help="memory of the sparse model and its predictors"
    )
    cluster_size_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from pi2lab.ffi import kernel_status
    from pi2lab.model.info import model_info
    from pi2lab.predict.sparsify import sparse_summary

    summary = model_info(args.model)
    if args.kernels:
        summary = {**summary, **{f"kernel {k}": v for k, v in kernel_status().items()}}
    if args.sparse:
        summary = {**summary, **sparse_summary(args.model, args.cluster_size)}
    print_summary(summary, args.json, width=22)
    return 0
