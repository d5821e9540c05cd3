"""Which config class validates which recipe file under jobs/ (by file-name prefix)."""

from __future__ import annotations

import importlib
from pathlib import Path

RECIPE_CONFIGS = {
    "smoke": "raylign.smoke:SmokeConfig",
    "rrhf": "raylign.algorithms.rrhf_job:RRHFJobConfig",
    "rm": "raylign.training.reward_model_config:RewardTrainConfig",
    "best_of_n": "raylign.generation.best_of_n:BestOfNConfig",
    "almost": "raylign.feedback.almost:AlmostConfig",
    "annotate": "raylign.feedback.config:AnnotateConfig",
}


def recipe_config_for(path: str | Path):
    stem = Path(path).stem
    for prefix, target in RECIPE_CONFIGS.items():
        if stem == prefix or stem.startswith(prefix + "_"):
            module, name = target.split(":")
            return getattr(importlib.import_module(module), name)
    return None
