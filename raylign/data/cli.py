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
