"""``pi2lab train``: the bundled dReLU model from scratch, or its model card re-measured."""

from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub) -> None:
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
    p.set_defaults(func=run)


def run(args) -> int:
    from pi2lab.train.bundled import card_summary, train_bundled, write_card
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
    summary = {"out": args.out, **card_summary(card)}
    print(json.dumps(summary, indent=None if args.json else 2))
    return 0
