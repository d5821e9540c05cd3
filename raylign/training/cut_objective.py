"""CUT as an objective of the offline trainer, with LoRA through peft (`trainable: lora`).

Ray Data stages, per split: judgment rows -> seeded positive downsampling (a batch-level
choice: it needs the split's negative count, so it runs before sharding) -> both
encodings as token rows. Workers pack the plain encodings of a micro-batch and the
judgment encodings of its negatives into one forward pass and take `cut_loss`.
"""

from __future__ import annotations

from typing import Literal

import torch

from raylign.algorithms.cut import CUTConfig, cut_loss
from raylign.config import StrictModel
from raylign.training.objective import OfflineObjective
from raylign.training.offline_config import (
    LoraSettings,
    OfflineDataConfig,
    OfflineTrainConfig,
)


class HeldoutConfig(StrictModel):
    """The before/after figures on held-out judgments (`raylign.evaluation.cut_eval`)."""

    path: str | None = None  # default: data.test_path
    negatives: int = 64  # judged responses whose judged-bad tokens are followed
    positives: int = 64  # acceptable responses for the fluency figure (their NLL)
    batch_size: int = 8


class CUTTrainConfig(OfflineTrainConfig):
    output_dir: str = "runs/cut"
    data: OfflineDataConfig = OfflineDataConfig(format="cut", max_length=384)
    trainable: Literal["all", "top_layers", "lora"] = "lora"
    # The paper: r 16, alpha 16, dropout 0.05 on the MLP projections, lr 4e-4, cosine.
    lora: LoraSettings = LoraSettings(r=16, alpha=16, dropout=0.05, target_modules=["gate_proj", "up_proj", "down_proj"])
    lr: float = 4e-4
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    cut: CUTConfig = CUTConfig()
    heldout: HeldoutConfig = HeldoutConfig()


class TagRows:
    """Ray Data stage: mark negatives and give each row its seeded downsampling key."""

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, table):
        import pyarrow as pa

        from raylign.algorithms.cut_data import is_negative, keep_key

        rows = table.to_pylist()
        return pa.table({
            "prompt_id": pa.array([r["prompt_id"] for r in rows], pa.string()),
            "prompt": pa.array([r["prompt"] for r in rows], pa.string()),
            "instruction": pa.array([r.get("instruction") or r["prompt"] for r in rows], pa.string()),
            "input": pa.array([r.get("input") or "" for r in rows], pa.string()),
            "output": pa.array([r["output"] for r in rows], pa.string()),
            "judgment": pa.array([r.get("judgment") for r in rows], pa.string()),
            "negative": pa.array([is_negative(r) for r in rows], pa.bool_()),
            "keep_key": pa.array([keep_key(r, self.seed) for r in rows], pa.float64()),
        })


class EncodeJudgments:
    """Ray Data stage: judgment rows -> plain / judgment prompt ids and the shared response ids."""

    def __init__(self, model_path: str, cut: CUTConfig, max_length: int):
        self.model_path, self.cut, self.max_length = model_path, cut, max_length

    def __call__(self, table):
        import pyarrow as pa

        from raylign.algorithms.cut_data import encode_example
        from raylign.models.chat import load_tokenizer

        tokenizer = load_tokenizer(self.model_path)
        out = {"plain_prompt": [], "judged_prompt": [], "response": [], "negative": [], "length": []}
        for row in table.to_pylist():
            example = encode_example(tokenizer, row, self.cut, self.max_length)
            judged = example.judged_prompt or []
            out["plain_prompt"].append(example.plain_prompt)
            out["judged_prompt"].append(judged)
            out["response"].append(example.response)
            out["negative"].append(example.negative)
            out["length"].append(max(len(example.plain_prompt), len(judged)) + len(example.response))
        ids = pa.list_(pa.int32())
        return pa.table({
            "plain_prompt": pa.array(out["plain_prompt"], ids),
            "judged_prompt": pa.array(out["judged_prompt"], ids),
            "response": pa.array(out["response"], ids),
            "negative": pa.array(out["negative"], pa.bool_()),
            "length": pa.array(out["length"], pa.int32()),
        })


def downsample_dataset(ds, downsample: float | None):
    """Keep every negative and the int(downsample * #negatives) positives with the smallest keys."""
    from raylign.algorithms.cut_data import positives_to_keep

    if downsample is None:
        return ds
    negatives = ds.filter(lambda row: bool(row["negative"])).count()
    keys = sorted(row["keep_key"] for row in ds.filter(lambda row: not row["negative"]).select_columns(["keep_key"])
                  .take_all())
    count = positives_to_keep(len(keys), negatives, downsample)
    if count >= len(keys):
        return ds
    cutoff = keys[count - 1] if count else -1.0
    return ds.filter(lambda row: bool(row["negative"]) or row["keep_key"] <= cutoff)


class CUTObjective(OfflineObjective):
    name = "cut"
    row_kind = "judgment"
    unit = "judgments"
    lora_task = "CAUSAL_LM"
    select_metric = "loss"
    select_mode = "min"

    def prepare_dataset(self, ds, model_path: str):
        cut = self.config.cut
        tagged = ds.map_batches(TagRows(cut.seed), batch_format="pyarrow", batch_size=256).materialize()
        kept = downsample_dataset(tagged, cut.downsample)
        return kept.map_batches(EncodeJudgments(model_path, cut, self.config.data.max_length),
                                batch_format="pyarrow", batch_size=64)

    def collate(self, rows: list[dict]) -> dict:
        from raylign.algorithms.cut_data import CUTExample, pack_examples

        examples = [CUTExample("", bool(r["negative"]), list(r["plain_prompt"]),
                               list(r["judged_prompt"]) if r["negative"] else None, list(r["response"]))
                    for r in rows]
        return pack_examples(examples, self.pad_id)

    def loss(self, module, data: dict) -> tuple[torch.Tensor, float, dict]:
        from raylign.algorithms.cut_data import aligned_logprobs
        from raylign.models.sequences import token_logprobs

        logprobs = token_logprobs(module, data["batch"])
        plain, judged, mask = aligned_logprobs(logprobs, data)
        cut = self.config.cut
        return cut_loss(plain, judged, mask, data["negative"], cut.threshold, cut.weight_unlike,
                        cut.weight_align_n)


def run(config: CUTTrainConfig) -> dict:
    """Train, then measure the held-out judged-bad tokens before and after (`raylign eval cut`)."""
    import json
    from pathlib import Path

    from raylign.evaluation.cut_eval import format_report, heldout_report, heldout_rows
    from raylign.training.offline_trainer import run_offline

    summary = run_offline(config, CUTObjective(config))
    heldout_path = config.heldout.path or config.data.test_path
    if heldout_path:
        rows = heldout_rows(heldout_path, config.heldout.negatives, config.heldout.positives)
        report = heldout_report(config.model, {"after": summary["model_dir"]}, rows, config.cut,
                                config.data.max_length, config.heldout.batch_size)
        report["data"] = heldout_path
        print(format_report(report, f"[cut] held-out judgments ({heldout_path})"), flush=True)
        (Path(config.output_dir) / "heldout_cut.json").write_text(json.dumps(report, indent=2))
        summary["heldout"] = report
        (Path(config.output_dir) / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str]) -> int:
    from raylign.cli import run_recipe

    run_recipe(argv, "train cut", "CUT (contrastive unlikelihood with judgments) with LoRA on Ray Train.", CUTTrainConfig, run)
    return 0
