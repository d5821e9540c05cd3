"""Reward models (`raylign train rm`): the pairwise Bradley-Terry objective of the offline trainer.

Rows: {chosen_ids, rejected_ids, length}, each the (prompt, response) text of
`raylign.scoring.text.encode_scored_pair` in `data.prompt_format` (chat template or HH
markers, recorded in raylign_rm.json), so training scores exactly the tokens evaluation,
Serve and the reward actor score. Loss: -log sigma(r_chosen - r_rejected)
summed over pairs (the trainer divides by the global pair count); accuracy counts ties
as half. See ALGORITHMS.md, Reward model. With `rm.export_delta` the trained model is also
written as a compact weight delta against its base (`raylign.models.shipped`), the form the
shipped reward models take.

    raylign train rm --config jobs/rm_hh.yaml [key.sub=value ...]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field

from raylign.algorithms.objective import OfflineObjective
from raylign.config import StrictModel
from raylign.data.adapters import human_probability
from raylign.data.bundled import BUNDLED_HH
from raylign.models.chat import PROMPT_FORMATS
from raylign.models.trainable import head_names
from raylign.scoring.losses import pairwise_correct


class RewardModelConfig(StrictModel):
    head_lr: float | None = Field(None, gt=0.0)  # the fresh scalar head often wants a larger rate than optim.lr
    export_delta: str | None = None  # also write a compact weight delta file here (raylign/models/shipped.py)


class TokenizePairs:
    """Ray Data stage: preference rows -> scored-text token ids of both responses."""

    def __init__(self, model_path: str, max_length: int, over_long: str, prompt_format: str = "chat"):
        self.model_path, self.max_length, self.over_long = model_path, max_length, over_long
        self.prompt_format = prompt_format

    def __call__(self, table):
        import pyarrow as pa

        from raylign.models.chat import load_tokenizer
        from raylign.scoring.text import PairTooLongError, encode_scored_pair

        tokenizer = load_tokenizer(self.model_path)
        out = {"chosen_ids": [], "rejected_ids": [], "p_human": [], "length": []}
        for row in table.to_pylist():
            try:
                chosen, rejected = (encode_scored_pair(tokenizer, row, row[key], self.max_length, self.over_long,
                                                       self.prompt_format) for key in ("chosen", "rejected"))
            except PairTooLongError:
                continue
            out["chosen_ids"].append(chosen)
            out["rejected_ids"].append(rejected)
            out["p_human"].append(human_probability(row))
            out["length"].append(max(len(chosen), len(rejected)))
        return pa.table({
            "chosen_ids": pa.array(out["chosen_ids"], pa.list_(pa.int32())),
            "rejected_ids": pa.array(out["rejected_ids"], pa.list_(pa.int32())),
            "p_human": pa.array(out["p_human"], pa.float32()),
            "length": pa.array(out["length"], pa.int32()),
        })


def bradley_terry_sum(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, float, dict]:
    """(sum of -log sigma(r_c - r_r), number of pairs, {accuracy}) for one micro-batch."""
    loss_sum = -F.logsigmoid(chosen - rejected).sum()
    accuracy = float(pairwise_correct(chosen.detach(), rejected.detach()).mean()) if len(chosen) else float("nan")
    return loss_sum, float(len(chosen)), {"accuracy": accuracy}


class RewardModelObjective(OfflineObjective):
    name = "rm"
    config_class = RewardModelConfig
    section = "rm"
    recipe_defaults = {"data": {"path": str(BUNDLED_HH)}}
    renamed_keys = {"head_lr": "rm.head_lr", "export_delta": "rm.export_delta"}
    row_kind = "preference"
    unit = "pairs"
    lora_task = "SEQ_CLS"
    prompt_formats = PROMPT_FORMATS
    select_metric = "accuracy"
    select_mode = "max"

    def prepare_dataset(self, ds, model_path: str):
        data = self.config.data
        return ds.map_batches(TokenizePairs(model_path, data.max_length, data.over_long, data.prompt_format),
                              batch_format="pyarrow", batch_size=64)

    def build_model(self, model_path: str):
        from raylign.scoring.reward_model import load_reward_model

        model, tokenizer, _ = load_reward_model(model_path, head_seed=self.config.seed)
        return model, tokenizer

    def forward_module(self, model):
        from raylign.scoring.reward_model import PairScorer

        return PairScorer(model)

    def param_groups(self, model) -> list[dict]:
        """The scalar head gets `rm.head_lr` (a fresh head wants a larger rate than the body)."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        heads = tuple(head_names(inner))
        head, body = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                parts = name.split(".")
                (head if any(h in parts for h in heads) else body).append(param)
        lr = self.config.optim.lr
        groups = [{"params": body, "lr": lr}]
        if head:
            groups.append({"params": head, "lr": self.config.rm.head_lr or lr})
        return [g for g in groups if g["params"]]

    def collate(self, rows: list[dict]):
        from raylign.scoring.reward_model import pad_batch

        ids, mask = pad_batch([r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask, "pairs": len(rows)}

    def loss(self, module, data):
        device = next(module.parameters()).device
        scores = module(data["input_ids"].to(device), data["attention_mask"].to(device))
        n = data["pairs"]
        return bradley_terry_sum(scores[:n], scores[n:])

    def save(self, model, tokenizer, out_dir: Path) -> None:
        """An HF directory plain transformers loads; LoRA runs also keep their adapter in adapter/."""
        if hasattr(model, "merge_and_unload"):
            model.save_pretrained(out_dir / "adapter")
            model = model.merge_and_unload()
        model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        info = {"base_model": self.config.model, "max_length": self.config.data.max_length,
                "trainable": self.config.trainable, "prompt_format": self.config.data.prompt_format}
        (out_dir / "raylign_rm.json").write_text(json.dumps(info))


def export_after_training(recipe, summary: dict) -> dict:
    """`rm.export_delta`: the trained model as a weight delta against its base (what ships)."""
    if not recipe.rm.export_delta:
        return summary
    from raylign.models.registry import resolve_model
    from raylign.models.shipped import export_delta

    export_delta(Path(recipe.output_dir), resolve_model(recipe.model), Path(recipe.rm.export_delta),
                 recipe.data.max_length, recipe.model, recipe.data.prompt_format)
    return {**summary, "delta": recipe.rm.export_delta}
