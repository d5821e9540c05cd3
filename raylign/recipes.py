"""The shared body of every recipe command: `--config FILE` plus `key.sub=value` overrides, the
recipe validated (`raylign.config`), the preflight checks run (`raylign.preflight`), the
recipe printed, then the command's own work.

Which recipe class validates which file under jobs/ is the method registry's business
(`raylign.launch.recipes.recipe_class_for`).
"""

from __future__ import annotations

import argparse
from typing import Callable, TypeVar

from raylign.config import StrictModel, dump_config, load_config
from raylign.preflight import check_config

T = TypeVar("T", bound=StrictModel)


def recipe_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The shared shape of recipe commands: --config FILE plus key.sub=value overrides."""
    parser = argparse.ArgumentParser(prog=f"raylign {prog}", description=description)
    parser.add_argument("--config", "-c", help="recipe YAML (see jobs/)")
    parser.add_argument("overrides", nargs="*", help="overrides such as sampling.num_samples=4")
    return parser


def load_recipe(argv: list[str], prog: str, description: str, config_cls: type[T]) -> T:
    """Parse the command line, load and validate the recipe, check what it names, print it."""
    args = recipe_parser(prog, description).parse_args(argv)
    config = load_config(config_cls, args.config, args.overrides)
    check_config(config)
    print(dump_config(config), flush=True)
    return config


def run_recipe(argv: list[str], prog: str, description: str, config_cls: type[T], run: Callable[[T], object]):
    """Load the recipe (`load_recipe`) and run it."""
    return run(load_recipe(argv, prog, description, config_cls))
