"""Saving a trained reward model as a plain Hugging Face directory.

Training itself runs on the shared offline trainer (`raylign/training/offline_trainer.py`)
with `RewardModelObjective` (`reward_model_objective.py`).
"""

from __future__ import annotations

import json
from pathlib import Path

from raylign.training.reward_model_config import RewardTrainConfig


def save_reward_model(model, tokenizer, out_dir: Path, config: RewardTrainConfig) -> None:
    """An HF directory plain transformers loads; LoRA runs also keep their adapter in adapter/."""
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(out_dir / "adapter")
        model = model.merge_and_unload()
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "raylign_rm.json").write_text(
        json.dumps({"base_model": config.model, "max_length": config.data.max_length, "trainable": config.trainable})
    )
