"""What an offline method plugs into the offline trainer (`raylign/training/trainer.py`).

The trainer owns Ray: it reads the files with Ray Data, splits them by a seeded hash of
the prompt, shards them over a Ray Train worker group, batches by length, accumulates,
schedules, evaluates, checkpoints and saves. A method (reward model, SFT, DPO, CUT) is
one `OfflineObjective` subclass that says only what is particular to it:

- `row_kind`:           which canonical rows it reads (`raylign.data.adapters` kinds, or "sft");
- `prepare_dataset`:    canonical rows -> token rows with a `length` column, as Ray Data
                        `map_batches` stages (tokenising, precomputed reference log-probs...);
- `build_model`:        the HF model to train (the trainer freezes layers / adds LoRA after);
- `forward_module`:     the nn.Module DDP wraps (default: the model itself);
- `collate` / `weight`: a list of token rows -> the micro-batch data, and its loss weight
                        (pairs, response tokens...: the trainer divides by the global sum);
- `loss`:               (module, data) -> (loss_sum, weight, metrics), the contract of
                        `raylign.training.step.optimizer_step`;
- `save`:               write the final HF directory.

Evaluation needs nothing extra: the trainer runs `loss` without gradients over the
validation / test rows and reports the weighted means of its metrics; `select_metric`
and `select_mode` name the one that drives early stopping and best-checkpoint keeping.

A new objective is one module here plus one line in the method registry
(`raylign/launch/methods.py`); its recipe is the offline trainer's sections
(`raylign/training/config.py`) plus the ones it declares (`MethodSettings`). Everything here
runs in Ray workers, so an objective must be picklable (plain attributes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from raylign.algorithms.base import MethodSettings


class OfflineObjective(MethodSettings):
    """Base class: subclasses set `name`, `row_kind`, `unit` and implement the marked hooks."""

    row_kind: ClassVar[str] = "preference"  # canonical rows read: preference | sft | judgment | ...
    unit: ClassVar[str] = "pairs"  # what one row is, for counts in the summary
    lora_task: ClassVar[str] = "CAUSAL_LM"  # peft TaskType when config.trainable == "lora"
    select_metric: ClassVar[str] = "loss"  # validation metric for early stop / keep_best
    select_mode: ClassVar[str] = "min"  # "min" or "max"
    # the `data.prompt_format` values its encoding honours (raylign.models.chat); others are refused
    prompt_formats: ClassVar[tuple[str, ...]] = ("chat",)

    def __init__(self, config):
        self.config = config  # the whole recipe (the trainer's sections and the method's)
        self.pad_id = 0  # set by the trainer from the tokenizer before the first collate

    # --- data (driver side, as Ray Data stages) ----------------------------------------

    def prepare_dataset(self, ds, model_path: str):
        """Canonical rows -> token rows with an int `length` column (use `ds.map_batches`).

        Runs once per split (train / validation / test) in Ray Data tasks, never in the
        driver; the tokenizer is loaded inside the stage from `model_path`.
        """
        raise NotImplementedError

    def augment(self, ds, split: str):
        """Canonical rows of one split -> the rows to train or evaluate on (default: as read).
        Runs before `prepare_dataset`; the reward model adds rule-made hack pairs to "train"."""
        return ds

    def stage_cpus(self) -> dict[str, float]:
        """CPUs the method's own Ray Data actors hold while the data is prepared (DPO's reference
        pool): the preflight checks they leave a CPU for the tasks that feed them."""
        return {}

    # --- model (worker side) -----------------------------------------------------------

    def build_model(self, model_path: str) -> tuple[nn.Module, Any]:
        """(HF model in float32, tokenizer). The trainer applies top-N / LoRA freezing after."""
        from transformers import AutoModelForCausalLM

        from raylign.models.chat import load_tokenizer

        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        model.config.use_cache = False
        return model, load_tokenizer(model_path)

    def forward_module(self, model: nn.Module) -> nn.Module:
        """The module whose forward the loss calls (what DDP wraps)."""
        return model

    def param_groups(self, model: nn.Module) -> list[dict]:
        """Optimizer parameter groups over the trainable parameters (one group by default)."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": self.config.optim.lr}]

    # --- batches and loss (worker side) ------------------------------------------------

    def collate(self, rows: list[dict]) -> Any:
        """Token rows (dicts of lists / numbers) -> the tensors `loss` takes."""
        raise NotImplementedError

    def weight(self, rows: list[dict]) -> float:
        """The micro-batch's share of the global normaliser (default: one per row)."""
        return float(len(rows))

    def loss(self, module: nn.Module, data: Any) -> tuple[torch.Tensor, float, dict]:
        """(loss_sum, weight, metrics); the trainer divides loss_sum by the global weight."""
        raise NotImplementedError

    # --- output (rank 0) ---------------------------------------------------------------

    def save(self, model: nn.Module, tokenizer, out_dir: Path) -> None:
        """A plain HF directory; LoRA adapters are merged when `config.merge_lora` (default)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        if hasattr(model, "merge_and_unload"):
            model.save_pretrained(out_dir / "adapter")
            if not getattr(self.config, "merge_lora", True):
                tokenizer.save_pretrained(out_dir / "adapter")
                return
            model = model.merge_and_unload()
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
