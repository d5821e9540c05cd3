"""`raylign data check`: read a file through an adapter, report counts and the first row."""

from __future__ import annotations

import argparse
import json

from raylign.data.adapters import FORMATS, KINDS, iter_rows


def check(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raylign data check", description=check.__doc__)
    parser.add_argument("path")
    parser.add_argument("--kind", choices=KINDS, default="prompt")
    parser.add_argument("--format", choices=FORMATS, default="auto")
    parser.add_argument("--on-error", choices=("raise", "skip"), default="raise")
    args = parser.parse_args(argv)
    first, count = None, 0
    for row in iter_rows(args.path, args.kind, args.format, on_error=args.on_error):
        first = first or row
        count += 1
    print(json.dumps({"path": args.path, "kind": args.kind, "rows": count, "first": first}, indent=2)[:2000])
    return 0


def arithmetic(argv: list[str]) -> int:
    """Integer-arithmetic problems with their answers, train or test (disjoint by problem)."""
    from raylign.data.arithmetic import TASKS, generate, write_rows

    parser = argparse.ArgumentParser(prog="raylign data arithmetic", description=arithmetic.__doc__)
    parser.add_argument("--out", required=True, help="a .jsonl or .jsonl.gz file to write")
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--count", type=int, default=1500)
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--seed", type=int, default=0, help="which problems and phrasings")
    parser.add_argument("--split-seed", type=int, default=0, help="which problems are held out")
    parser.add_argument("--phrasings", choices=("train", "held-out"), default="train",
                        help="held-out: wordings that no train file uses (a test of transfer)")
    args = parser.parse_args(argv)
    rows = generate(args.count, args.split, args.seed, tuple(args.tasks), split_seed=args.split_seed,
                    held_out_phrasings=args.phrasings == "held-out")
    print(f"wrote {len(rows)} {args.split} problems to {write_rows(rows, args.out)}")
    return 0
