"""The online engine's settings: the `engine` section of an online recipe and its `trainer`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from raylign.config import InputPath, OutputDir, StrictModel
from raylign.engine.weight_sync import WeightSyncConfig
from raylign.models.trainable import TrainableSettings
from raylign.training.config import WorkerGroupSettings
from raylign.training.optim import OptimConfig


class TrainerConfig(TrainableSettings, WorkerGroupSettings):
    """The policy trainer (`engine.trainer`): the worker group, what trains and the optimizer use
    the names the offline trainer uses (`raylign.training.config`); the update plan below is the
    one home of epochs x minibatches (a method only supplies the default)."""

    optim: OptimConfig = OptimConfig(lr=1e-5, schedule="constant", warmup_ratio=0.0)
    max_length: int = Field(768, ge=2)  # tokens of prompt + response a loss sees
    deepspeed_config: InputPath | None = None  # DeepSpeed JSON (GPU clusters), e.g. cluster/deepspeed_zero2.json
    keep_checkpoints: int = Field(1, ge=1)  # reported checkpoints Ray Train keeps (output_dir/ray_train), besides latest/
    # also an HF copy of the policy every N steps, output_dir/snapshots/step_<N> (over-optimisation
    # curves: evaluate the policy as training goes on); None writes only final/
    snapshot_every: int | None = Field(None, ge=1)
    epochs: int | None = Field(None, ge=1)  # passes over each rollout batch; None = the method's default (PPO: 2)
    num_minibatches: int | None = Field(None, ge=1)  # optimizer steps per epoch; None = the method's default
    micro_batch_size: int | None = Field(None, ge=1)  # units per forward/backward; None = the method's default
    logprob_chunk_size: int | None = Field(None, ge=1)  # rows per forward when computing log-probs (bounds the logits tensor)

    @field_validator("trainable")
    @classmethod
    def _no_lora_online(cls, value: str) -> str:
        if value == "lora":
            raise ValueError("the online engine trains all weights or the top layers; LoRA is offline-only for now "
                             "(the samplers load full weights)")
        return value

    @model_validator(mode="after")
    def _deepspeed_schedules_nothing(self) -> "TrainerConfig":
        if self.deepspeed_config and self.optim.schedule != "constant":
            raise ValueError("optim.schedule: only 'constant' runs under deepspeed_config (DeepSpeed steps its "
                             "own optimizer; give the schedule in its JSON instead)")
        return self


class EngineConfig(StrictModel):
    num_iterations: int = Field(3, ge=1)
    prompts_per_step: int = Field(4, ge=1)
    max_staleness: int = Field(0, ge=0)  # 0 = synchronous (on-policy); 1 = sample step i+1 while step i trains
    pipeline: Literal["streaming", "sequential"] = "streaming"
    output_dir: OutputDir = "runs/online"  # each method's recipe defaults it to runs/<method>
    resume: bool = False
    # how long a step may wait for the samplers to reach the policy version it needs
    staleness_timeout_s: float = Field(1800.0, gt=0)
    trainer: TrainerConfig = TrainerConfig()
    weight_sync: WeightSyncConfig = WeightSyncConfig()
