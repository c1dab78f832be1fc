"""``pi2lab convert`` and ``verify``: write a model's flash layout, and check one."""

from __future__ import annotations

from pi2lab.cli.common import print_summary


def add_parsers(sub) -> None:
    p = sub.add_parser("convert", help="write a model's flash layout (resident part + bundles)")
    p.add_argument("--model", default="builtin")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=["f32", "f16", "int8", "int4"], default="f32")
    p.add_argument(
        "--cluster-size", type=int, default=None, help="neurons per read unit (default: 4 KiB fit)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_convert)

    p = sub.add_parser("verify", help="check a flash layout: header, sizes, checksums")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_verify)


def run_convert(args) -> int:
    from pi2lab.convert import convert_pretrained
    from pi2lab.storage.layout import open_layout

    out = convert_pretrained(
        args.model,
        args.out,
        dtype=args.dtype,
        cluster_size=args.cluster_size,
    )
    print_summary(open_layout(out).summary(), args.json, width=15)
    return 0


def run_verify(args) -> int:
    from pi2lab.storage.layout import verify

    print_summary(verify(args.dir).summary(), args.json, width=15)
    return 0
