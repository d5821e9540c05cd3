"""`raylign model prepare`: make a model ready for offline use."""

from __future__ import annotations

import argparse

from raylign.models.local import DEFAULT_MODEL
from raylign.models.registry import resolve_model


def prepare(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raylign model prepare", description=prepare.__doc__)
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="model name or local path")
    args = parser.parse_args(argv)
    print(resolve_model(args.model))
    return 0
