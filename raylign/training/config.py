"""Settings both trainers share, documented once, and the offline trainer's recipe.

The online engine (`engine.trainer` in an online recipe) and the offline trainer (the top level
of an offline recipe) name these the same: `optim` (learning rate, schedule, clipping), what
trains (`trainable`, `top_layers`, `lora`: `raylign.models.trainable.TrainableSettings`), and
the Ray Train worker group (`WorkerGroupSettings`). An offline method's recipe is
`OfflineTrainConfig` plus the sections it declares (`raylign.algorithms.objective`).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from raylign.config import ModelName, OutputDir, RayAddress, StrictModel
from raylign.data.config import TrainDataConfig
from raylign.models.local import DEFAULT_MODEL
from raylign.models.trainable import TrainableSettings
from raylign.training.optim import OptimConfig


class WorkerGroupSettings(StrictModel):
    """The Ray Train worker group that runs the updates."""

    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, ge=0.0)
    use_gpu: bool = False
    # torch intra-op threads per worker; None = the CPUs it reserves, rounded. On a small CPU
    # machine an update can use the cores the samplers leave idle while it runs.
    torch_threads: int | None = Field(None, ge=1)
    gradient_checkpointing: bool = False  # recompute activations in backward (long sequences, big models)
    # worker-group failures survived, each restart resuming from the last resumable checkpoint
    max_failures: int = Field(2, ge=0)
    save_every: int = Field(0, ge=0)  # steps between resumable checkpoints; 0 = none until the end
    seed: int = 0


class OfflineTrainConfig(TrainableSettings, WorkerGroupSettings):
    """`raylign train rm|sft|dpo|cut`: Ray Train over Ray Data shards (unknown keys fail)."""

    renamed_keys: ClassVar[dict] = {key: f"optim.{key}" for key in
                                    ("lr", "weight_decay", "warmup_ratio", "schedule", "max_grad_norm")}

    model: ModelName = DEFAULT_MODEL
    output_dir: OutputDir = "runs/offline"
    ray_address: RayAddress | None = None
    data: TrainDataConfig = TrainDataConfig()
    optim: OptimConfig = OptimConfig()
    merge_lora: bool = True  # save LoRA merged into a plain HF checkpoint (adapter/ is kept too)
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)  # optimizer steps; stops early when reached
    batch_size: int = Field(8, ge=1)  # rows per worker per micro-batch
    grad_accum: int = Field(1, ge=1)  # micro-batches per optimizer step
    length_window: int = Field(32, ge=1)  # micro-batches of rows sorted by length together (less padding)
    bf16: bool = False  # bfloat16 autocast (weights and optimizer stay float32)
    eval_every: int = Field(50, ge=0)  # optimizer steps between validation passes (0: only at the end)
    eval_at_start: bool = False  # also evaluate validation and test before the first step
    eval_batch_size: int = Field(16, ge=1)
    early_stop_patience: int | None = None  # validation passes without improvement before stopping
    keep_best: bool = True  # restore the best-validation weights before saving
    log_every: int = Field(10, ge=1)
    # Run the Ray Data stages (tokenising, reference log-probs) to completion before the
    # worker group starts: on a machine whose CPUs the workers take, streaming stages
    # would wait for CPUs forever. Clusters with spare CPUs can stream (false).
    materialize: bool = True
