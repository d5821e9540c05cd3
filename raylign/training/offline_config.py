"""Settings every offline method shares (`raylign train rm|sft|dpo|cut`); each method's recipe
config subclasses `OfflineTrainConfig` and adds its own section (validated; unknown keys fail)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raylign.config import StrictModel
from raylign.models.trainable import LoraSettings


class OfflineDataConfig(StrictModel):
    path: str = ""
    format: str = "auto"  # any format raylign.data.adapters reads (hh, alpaca, alpaca_eval, generic, ...)
    on_error: Literal["raise", "skip"] = "raise"  # skip: drop malformed rows (logged) instead of failing
    limit: int | None = None  # rows per split (train / validation / test), after the split
    # Deterministic held-out split by a seeded hash of the prompt id, so one prompt never
    # lands on both sides and every method (rm, dpo, sft) sees the same test prompts.
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # of the non-test rows; drives eval/early stop
    split_seed: int = 0
    test_path: str | None = None  # a separate held-out file instead of the hash split
    max_length: int = 384  # tokens of prompt + response; over-long rows keep the end of the prompt
    over_long: Literal["truncate", "drop"] = "truncate"


class OfflineTrainConfig(StrictModel):
    model: str = "SmolLM2-135M-Instruct"
    output_dir: str = "runs/offline"
    data: OfflineDataConfig = OfflineDataConfig()
    # What trains: every weight, the top N blocks (+ final norm, + a head), or LoRA
    # adapters; the last two fit a 135M+ model on a laptop CPU.
    trainable: Literal["all", "top_layers", "lora"] = "top_layers"
    top_layers: int = 2
    lora: LoraSettings = LoraSettings()
    merge_lora: bool = True  # save LoRA merged into a plain HF checkpoint (adapter/ is kept too)
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; stops early when reached
    batch_size: int = 8  # rows per worker per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    length_window: int = 32  # micro-batches of rows sorted by length together (less padding)
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    schedule: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"  # transformers.get_scheduler
    max_grad_norm: float = 1.0
    bf16: bool = False  # bfloat16 autocast (weights and optimizer stay float32)
    gradient_checkpointing: bool = False  # recompute activations in backward (long sequences, big models)
    eval_every: int = 50  # optimizer steps between validation passes (0: only at the end)
    eval_at_start: bool = False  # also evaluate validation and test before the first step
    eval_batch_size: int = 16
    early_stop_patience: int | None = None  # validation passes without improvement before stopping
    keep_best: bool = True  # restore the best-validation weights before saving
    log_every: int = 10
    save_every: int = 0  # optimizer steps between resumable checkpoints (0: none until the end)
    max_failures: int = 0  # worker-group failures survived by resuming from the last checkpoint
    seed: int = 0
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    torch_threads: int | None = None  # per worker; default: cpus_per_worker rounded
    # Run the Ray Data stages (tokenising, reference log-probs) to completion before the
    # worker group starts: on a machine whose CPUs the workers take, streaming stages
    # would wait for CPUs forever. Clusters with spare CPUs can stream (false).
    materialize: bool = True
    ray_address: str | None = None
