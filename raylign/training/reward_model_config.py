"""Recipe schema for `raylign train rm` (validated on load; unknown keys are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from raylign.config import StrictModel

BUNDLED_PAIRS = str(Path(__file__).resolve().parents[1] / "assets" / "hh_rlhf_harmless_sample.jsonl.gz")


class RewardDataConfig(StrictModel):
    path: str = BUNDLED_PAIRS
    format: str = "auto"  # any preference format the adapters read (hh, alpaca_eval, generic)
    on_error: Literal["raise", "skip"] = "raise"
    limit: int | None = None
    # Deterministic held-out split by a seeded hash of the prompt, so one prompt never
    # lands on both sides; `raylign eval rm --split test` reproduces it.
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # of the non-test pairs; drives eval/early stop
    split_seed: int = 0
    test_path: str | None = None  # a separate held-out file instead of the hash split
    max_length: int = 384  # tokens of prompt + response; over-long keep their end
    over_long: Literal["truncate", "drop"] = "truncate"


class LoraSettings(StrictModel):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    top_layers: int | None = None  # adapt only the top N blocks (None: all)


class RewardTrainConfig(StrictModel):
    model: str = "SmolLM2-135M-Instruct"
    output_dir: str = "runs/rm"
    data: RewardDataConfig = RewardDataConfig()
    # What is trained besides the scalar head: every weight, the top N blocks (+ final
    # norm), or LoRA adapters; the last two fit a 135M+ model on a laptop CPU.
    trainable: Literal["all", "top_layers", "lora"] = "top_layers"
    top_layers: int = 2
    lora: LoraSettings = LoraSettings()
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; stops early when reached
    batch_size: int = 8  # pairs per worker per micro-batch
    grad_accum: int = 1
    lr: float = 1e-5
    head_lr: float | None = None  # the fresh scalar head often wants a larger rate
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float = 1.0
    bf16: bool = False  # bfloat16 autocast (weights and optimizer stay float32)
    eval_every: int = 50  # optimizer steps between validation passes (0: only at the end)
    eval_batch_size: int = 16
    early_stop_patience: int | None = None  # validation passes without improvement before stopping
    keep_best: bool = True  # restore the best-validation weights before saving
    log_every: int = 10
    seed: int = 0
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    torch_threads: int | None = None  # per worker; default: cpus_per_worker rounded
    ray_address: str | None = None
    export_delta: str | None = None  # also write a compact weight delta file here (see scoring/assets.py)
