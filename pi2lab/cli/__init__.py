"""The ``pi2lab`` command line. Bad input prints one line and exits with status 2."""

from __future__ import annotations

import argparse
import sys

from pi2lab.cli import bench, generate, info, plan, predict, simulate, storage, sweep, train
from pi2lab.errors import Pi2labError

# One module per command or group of commands, each with its parser beside its handler, in
# the order `pi2lab --help` lists them. Handlers import the library when they run, so a
# command loads only what it uses.
COMMANDS = (
    generate.add_parser,  # generate
    predict.add_parsers,  # profile, train-predictors, fidelity
    info.add_parser,  # info
    train.add_parser,  # train
    storage.add_parsers,  # convert, verify
    bench.add_parser,  # bench
    plan.add_parsers,  # plan, profile-hw
    simulate.add_parsers,  # reproduce, simulate
    sweep.add_parser,  # sweep
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pi2lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Pi2labError as e:
        print(f"pi2lab {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
