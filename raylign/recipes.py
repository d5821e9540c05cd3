"""Which config class validates which recipe file under jobs/ (by file-name prefix)."""

from __future__ import annotations

import importlib
from pathlib import Path

RECIPE_CONFIGS = {
    "smoke": "raylign.smoke:SmokeConfig",
    "rrhf": "raylign.algorithms.rrhf_job:RRHFJobConfig",
    "ppo": "raylign.algorithms.ppo_job:PPOJobConfig",
    "grpo": "raylign.algorithms.grpo_job:GRPOJobConfig",
    "rloo": "raylign.algorithms.grpo_job:GRPOJobConfig",
    "raft": "raylign.algorithms.raft_job:RAFTJobConfig",
    "online_dpo": "raylign.algorithms.online_dpo_job:OnlineDPOJobConfig",
    "quark": "raylign.algorithms.quark_job:QuarkJobConfig",
    "rm": "raylign.training.reward_model_config:RewardTrainConfig",
    "sft": "raylign.training.sft:SFTTrainConfig",
    "dpo": "raylign.training.dpo:DPOTrainConfig",
    "cut": "raylign.training.cut_objective:CUTTrainConfig",
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
