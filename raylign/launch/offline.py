"""Offline methods: preflight, the offline trainer, and what a method runs after it.

`raylign train <offline method>` composes the method's recipe class from
`raylign.training.config.OfflineTrainConfig` (`launch.recipes`), checks the data and the CPUs
before Ray starts, trains on Ray Train (`raylign.training.trainer.run_offline`), runs the
method's `after` step from the registry (the reward model's weight-delta export, CUT's held-out
report) and writes `train_summary.json`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from raylign.algorithms.objective import OfflineObjective
from raylign.config import ConfigError
from raylign.launch.methods import Method
from raylign.preflight import check_data, check_resources, check_stage_cpus, check_top_layers


def check_offline(recipe, objective: OfflineObjective) -> None:
    """The data gives the method's rows, what trains fits the model, the worker group fits the
    local cluster."""
    if recipe.data.prompt_format not in objective.prompt_formats:
        raise ConfigError(f"data.prompt_format: '{recipe.data.prompt_format}' is not read by `train {objective.name}` "
                          f"(it encodes with: {', '.join(objective.prompt_formats)})")
    recipe.data.format = check_data(recipe.data, objective.row_kind)
    if recipe.trainable == "top_layers":
        check_top_layers(recipe.model, recipe.top_layers, "top_layers")
    if recipe.trainable == "lora" and recipe.lora.top_layers is not None:
        check_top_layers(recipe.model, recipe.lora.top_layers, "lora.top_layers")
    check_stage_cpus(objective.stage_cpus(), recipe.ray_address)
    check_resources({"trainer workers": recipe.num_workers * recipe.cpus_per_worker},
                    {"trainer workers": recipe.num_workers if recipe.use_gpu else 0.0}, recipe.ray_address)


def run_method(recipe, objective: OfflineObjective, method: Method) -> dict:
    from raylign.training.trainer import run_offline

    summary = run_offline(recipe, objective)
    if method.after:
        module, name = method.after.split(":")
        summary = getattr(importlib.import_module(module), name)(recipe, summary)
        (Path(recipe.output_dir) / "train_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[{method.name}] done: {json.dumps(summary)}", flush=True)
    return summary
