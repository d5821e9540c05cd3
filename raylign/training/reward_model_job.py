"""`raylign train rm`: a pairwise reward model on the offline trainer, then the optional
compact weight-delta export.

    raylign train rm --config jobs/rm_hh.yaml [key.sub=value ...]
"""

from __future__ import annotations

import json
from pathlib import Path

from raylign.training.reward_model_config import RewardTrainConfig


def run(config: RewardTrainConfig) -> dict:
    from raylign.models.registry import resolve_model
    from raylign.training.offline_trainer import run_offline
    from raylign.training.reward_model_objective import RewardModelObjective

    summary = run_offline(config, RewardModelObjective(config))
    if config.export_delta:
        from raylign.models.shipped import export_delta

        export_delta(Path(config.output_dir), resolve_model(config.model), Path(config.export_delta),
                     config.data.max_length, config.model)
        summary["delta"] = config.export_delta
        (Path(config.output_dir) / "train_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"[rm] done: {json.dumps(summary)}", flush=True)
    return summary


def main(argv: list[str]) -> int:
    from raylign.cli import run_recipe

    run_recipe(argv, "train rm", "Train a pairwise (Bradley-Terry) reward model on Ray Train.", RewardTrainConfig, run)
    return 0
