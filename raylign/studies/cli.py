"""What every `raylign study <name>` shares: its command line, the stage check before anything
runs, and the resuming of an online training stage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from raylign.studies.stages import Stage, command, run_stages


def validate(stages: list[Stage]) -> None:
    """Every stage's recipe and overrides parse against their command's settings before anything
    runs (a misspelt key fails now, not hours in; paths that earlier stages write are not checked)."""
    from raylign.config import ConfigError, load_config
    from raylign.launch.recipes import OTHER_RECIPES, recipe_class

    targets = {"generate": OTHER_RECIPES["generate"], "annotate": OTHER_RECIPES["annotate"]}
    for stage in stages:
        argv = stage.settings.get("argv")
        if not argv or argv[0] not in ("train", "generate", "annotate") or "--config" not in argv:
            continue
        start = argv.index("--config")
        recipe, overrides = argv[start + 1], argv[start + 2 :]
        if argv[0] == "train":
            model = recipe_class(argv[1])
        else:
            import importlib

            module, name = targets[argv[0]].split(":")
            model = getattr(importlib.import_module(module), name)
        try:
            load_config(model, recipe, overrides)
        except ConfigError as err:
            raise ConfigError(f"study stage '{stage.name}': {err}") from None


def resuming(argv: list[str], output_dir: Path):
    """An online training stage: a run killed mid-way continues from its last checkpoint."""
    plain = command(*argv)

    def run() -> dict:
        if (output_dir / "latest").exists():
            return command(*argv, "engine.resume=true")()
        return plain()

    return run


def study_main(argv: list[str], name: str, doc: str, config_class, build_stages: Callable[[object], list[Stage]],
               root_of: Callable[[object], Path], default_config: str | None = None) -> int:
    from raylign.config import load_config
    from raylign.preflight import check_config
    from raylign.runtime import init_ray

    parser = argparse.ArgumentParser(prog=f"raylign study {name}", description=doc.split("\n\n")[0])
    parser.add_argument("--config", "-c", default=default_config or f"jobs/study/{name}.yaml")
    parser.add_argument("--plan", action="store_true", help="print the stages and whether each is done, run nothing")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    config = load_config(config_class, args.config, args.overrides)
    check_config(config)
    stages, root = build_stages(config), root_of(config)
    validate(stages)
    if args.plan:
        done = json.loads((root / "stages.json").read_text()) if (root / "stages.json").exists() else {}
        for i, stage in enumerate(stages, start=1):
            state = "done" if done.get(stage.name, {}).get("fingerprint") else "to run"
            shown = " ".join(stage.settings["argv"]) if stage.settings.get("argv") else ""
            print(f"{i:>2}. {stage.name:<24} {state:<7} {shown}")
        return 0
    init_ray(getattr(config, "ray_address", None))
    run_stages(stages, root)
    summary = root / "study.md"
    if summary.exists():
        print(summary.read_text())
    return 0
