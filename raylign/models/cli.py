"""`raylign model prepare`: make a model ready for offline use; `raylign model shrink`: a smaller
model cut from a larger one (ALMoST's "smaller generator" when only one model is at hand; the
name `MODEL@layers=N` builds the same on first use, `raylign.models.shrink`)."""

from __future__ import annotations

import argparse

from raylign.models.local import DEFAULT_MODEL
from raylign.models.registry import resolve_model
from raylign.models.shrink import shrink_model


def prepare(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raylign model prepare", description=prepare.__doc__)
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="model name or local path")
    args = parser.parse_args(argv)
    print(resolve_model(args.model))
    return 0


def shrink(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raylign model shrink", description=shrink_model.__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or local path")
    parser.add_argument("--keep-layers", type=int, required=True, help="bottom transformer blocks to keep")
    parser.add_argument("--output", required=True, help="directory for the smaller model")
    args = parser.parse_args(argv)
    info = shrink_model(resolve_model(args.model), args.keep_layers, args.output)
    print(f"{args.output}: {info['kept_layers']} of {info['of_layers']} blocks, "
          f"{info['parameters'] / 1e6:.1f}M of {info['source_parameters'] / 1e6:.1f}M parameters")
    return 0
