"""The policy trainer: a Ray Train `TorchTrainer` worker group driven by an `Algorithm`.

Each worker takes its share of step i's units from the RolloutBuffer, runs the method's
no-grad `prepare` pass (old log-probs, values, advantages), then epochs x minibatches of
optimizer steps through the shared step core (`raylign.training.step`). Every
`save_every` steps the ranks write and report a resumable checkpoint
(`trainer_checkpoint`); rank 0 then pushes the policy to every sampler (one sync = one
policy version), reports metrics to the driver and writes the final HF checkpoint.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
from pydantic import Field

from raylign.algorithms.base import Algorithm, TrainContext, policy_of
from raylign.config import StrictModel
from raylign.engine.trainer_checkpoint import (
    load_resumable,
    resume_point,
    save_resumable,
)
from raylign.training.step import MicroBatch, chunked, optimizer_step, split_even


class TrainerConfig(StrictModel):
    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, ge=0.0)
    use_gpu: bool = False
    learning_rate: float = Field(1e-5, gt=0.0)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    trainable_layers: int | None = None  # train only the top N decoder layers (+ final norm); None = all
    max_length: int = Field(768, ge=2)
    deepspeed_config: str | None = None  # DeepSpeed JSON (GPU clusters), e.g. cluster/deepspeed_zero2.json
    # restarts of a failed worker group, each resuming from the last resumable checkpoint
    max_failures: int = Field(2, ge=0)
    save_every: int = Field(0, ge=0)  # steps between resumable checkpoints; 0 = only the final one
    keep_checkpoints: int = Field(1, ge=1)  # reported checkpoints Ray Train keeps (output_dir/ray_train), besides latest/
    seed: int = 0
    epochs: int | None = None  # passes over each rollout batch; None = the algorithm's default
    num_minibatches: int | None = None  # optimizer steps per epoch; None = the algorithm's default
    micro_batch_size: int | None = None  # units per forward/backward; None = the algorithm's default
    gradient_checkpointing: bool = False  # recompute activations in backward (long sequences, big models)
    logprob_chunk_size: int | None = None  # rows per forward when computing log-probs (bounds the logits tensor)
    # torch intra-op threads per worker; None = Ray's (one per reserved CPU). On a small CPU
    # machine the update can use the cores the samplers leave idle while it runs.
    torch_threads: int | None = None


def freeze_lower_layers(model, trainable_layers: int | None) -> int:
    """Keep only the top N blocks (plus the final norm) trainable; returns #trainable params.

    The same freezing the reward-model trainer uses, so both stop backward at the same place.
    """
    from raylign.models.trainable import freeze_to_top_layers

    if trainable_layers is not None:
        freeze_to_top_layers(model, trainable_layers)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_hf_checkpoint(model, tokenizer, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    policy_of(model).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def _build(cfg: dict, start_path: str, algorithm: Algorithm):
    from transformers import AutoModelForCausalLM

    from raylign.models.chat import load_tokenizer

    trainer: TrainerConfig = cfg["trainer"]
    torch.manual_seed(trainer.seed)
    policy = AutoModelForCausalLM.from_pretrained(start_path, dtype=torch.float32)
    policy.config.use_cache = False
    freeze_lower_layers(policy, trainer.trainable_layers)
    if trainer.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    module = algorithm.build_module(policy)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    groups = algorithm.parameter_groups(module, trainer.learning_rate)
    tokenizer = load_tokenizer(start_path)
    if trainer.deepspeed_config:
        import deepspeed

        engine, optimizer, _, _ = deepspeed.initialize(model=module, model_parameters=groups, config=trainer.deepspeed_config)
        return engine, optimizer, tokenizer, trainable
    module = wrap_data_parallel(module)
    optimizer = torch.optim.AdamW(groups, lr=trainer.learning_rate, weight_decay=trainer.weight_decay)
    return module, optimizer, tokenizer, trainable


def wrap_data_parallel(module):
    """DDP through Ray Train. No buffer broadcast: buffers here are deterministic (rotary
    tables), and a broadcast per forward would tie ranks to the same number of forwards
    (the no-grad prepare passes differ per rank)."""
    import ray.train.torch

    return ray.train.torch.prepare_model(
        module, parallel_strategy_kwargs={"find_unused_parameters": False, "broadcast_buffers": False}
    )


def update_plan(trainer: TrainerConfig, algorithm: Algorithm) -> tuple[int, int, int]:
    """(epochs, minibatches per epoch, units per micro-batch): the recipe's or the method's."""
    default = algorithm.update
    return (
        trainer.epochs or default.epochs,
        trainer.num_minibatches or default.num_minibatches,
        trainer.micro_batch_size or default.micro_batch_size,
    )


def train_on_units(module, optimizer, algorithm: Algorithm, units: list, filler, context: TrainContext,
                   plan: tuple[int, int, int], deepspeed: bool, max_grad_norm: float, seed: int) -> dict[str, float]:
    """One rollout batch: prepare, then epochs x minibatches of optimizer steps. Every rank
    takes the same number of optimizer steps (the minibatch count does not depend on data)."""
    epochs, num_minibatches, micro_size = plan
    module.eval()
    context.num_real_units = len(units)  # batch statistics count these; a filler rides along at weight 0
    with torch.no_grad():
        metrics = dict(algorithm.prepare(module, units + ([filler] if filler is not None else []), context))
    module.train()

    def loss_fn(model, chunk):
        return algorithm.loss(model, chunk, context)

    steps: list[dict] = []
    for epoch in range(epochs):
        order = list(units)
        if epoch:
            random.Random(seed * 1009 + epoch).shuffle(order)
        for minibatch in split_even(order, num_minibatches):
            micro = [MicroBatch(chunk, sum(algorithm.unit_weight(u) for u in chunk)) for chunk in chunked(minibatch, micro_size)]
            filler_micro = MicroBatch([filler], 0.0) if filler is not None else None
            steps.append(optimizer_step(module, optimizer, micro, loss_fn, deepspeed=deepspeed,
                                        max_grad_norm=max_grad_norm, filler=filler_micro))
    for key in sorted({k for s in steps for k in s}):
        values = [s[key] for s in steps if key in s]
        metrics[key] = sum(values) / len(values)
    metrics["optimizer_steps"] = float(len(steps))
    return metrics


def policy_train_loop(cfg: dict) -> None:
    """Ray Train entry point (runs on every worker)."""
    import ray
    import ray.train

    from raylign.engine.weight_sync import make_weight_sync

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    trainer: TrainerConfig = cfg["trainer"]
    if trainer.torch_threads:
        torch.set_num_threads(trainer.torch_threads)
    algorithm: Algorithm = cfg["algorithm"]
    output_dir = Path(cfg["output_dir"])
    buffer = cfg["buffer"]
    deepspeed = trainer.deepspeed_config is not None
    # A restarted worker group (FailureConfig) continues from Ray Train's last reported
    # checkpoint, a resumed run (engine.resume=true) from latest/; see trainer_checkpoint.
    with resume_point(output_dir) as resume:
        module, optimizer, tokenizer, trainable = _build(cfg, str(resume.folder) if resume else cfg["model_path"],
                                                         algorithm)
        if resume:
            load_resumable(resume, module, optimizer, deepspeed, rank, world)
    state = resume.state if resume else {}
    start_step = state.get("step", 0)
    version = state.get("policy_version", start_step)
    algorithm.load_update_state_dict(state.get("algorithm_update", {}))
    sync = make_weight_sync(cfg["samplers"], cfg["weight_sync"], store=buffer) if rank == 0 else None
    plan = update_plan(trainer, algorithm)
    previous_end = time.perf_counter()
    if rank == 0 and resume:
        _record_resume(output_dir, resume, context)
        if state.get("last_report"):
            # the driver logs it unless it already has: a worker killed before reporting lost it
            ray.get(buffer.report.remote(start_step - 1, {**state["last_report"], "resent": True}))

    for step in range(start_step, cfg["num_iterations"]):
        shard = ray.get(buffer.get.remote(step, rank, world))
        if shard is None:  # the rollout stream ended early (an error the driver reports)
            return
        units, filler, selection = shard["units"], shard["filler"], shard["metrics"]
        # queue depth: steps already sampled and scored, waiting for the trainer
        queued = ray.get(buffer.pending.remote()) if rank == 0 else 0
        start = time.perf_counter()
        ctx = TrainContext(tokenizer.pad_token_id, trainer.max_length, trainer.logprob_chunk_size)
        metrics = train_on_units(module, optimizer, algorithm, units, filler, ctx, plan, deepspeed,
                                 trainer.max_grad_norm, trainer.seed + step)
        algorithm.after_update(metrics)
        train_seconds = time.perf_counter() - start
        version += 1
        report = _step_report(step, units, selection, metrics, version, train_seconds, world, plan[0], trainable,
                              queued) if rank == 0 else None
        # Save before the weight push: a sampler that dies during the push must not cost
        # the step that has just trained. The step's report goes in too, so a worker
        # killed before sending it can send it after the restart.
        if trainer.save_every and (step + 1) % trainer.save_every == 0 and step + 1 < cfg["num_iterations"]:
            resumable = {"step": step + 1, "policy_version": version,
                         "data_position": data_position(step + 1, cfg.get("prompts_per_step")),
                         "algorithm_update": algorithm.update_state_dict(), "world_size": world,
                         "last_report": report or {}}
            save_resumable(module, optimizer, tokenizer, output_dir, resumable, deepspeed, rank)
            if rank == 0:
                ray.get(buffer.release_before.remote(step + 1))  # a restart resumes after this step
        if rank == 0:
            report.update(sync.push(policy_of(module).state_dict(), version))
            now = time.perf_counter()
            # Wall time per step as the trainer lives it: waiting for rollouts + update + sync.
            report["iteration_seconds"] = now - previous_end
            previous_end = now
            ray.get(buffer.report.remote(step, report))
    if rank == 0:
        save_hf_checkpoint(module, tokenizer, output_dir / "final")


def _step_report(step: int, units: list, selection: dict, metrics: dict, version: int, train_seconds: float,
                 world: int, epochs: int, trainable: int, queued: int) -> dict:
    """Rank 0's metrics row for a step (the driver adds the rollout statistics)."""
    rows = [r for u in units for r in (u if isinstance(u, (list, tuple)) else [u]) if isinstance(r, dict)]
    staleness = [step - r["policy_version"] for r in rows if r.get("source") != "dataset" and "policy_version" in r]
    tokens = sum(len(r.get("prompt_token_ids", [])) + len(r.get("response_token_ids", [])) for r in rows)
    return {
        **selection,
        **metrics,
        "policy_version": version,
        "train_seconds": train_seconds,
        "train_tokens_per_s": tokens * world * epochs / max(train_seconds, 1e-9),
        "staleness_max": max(staleness, default=0),
        "staleness_mean": sum(staleness) / max(1, len(staleness)),
        "trainable_params": trainable,
        "buffer_pending_steps": queued,
    }


def data_position(next_step: int, prompts_per_step: int | None) -> dict:
    """Where the prompt stream continues: prompts are dealt to steps in order (`assign_steps`),
    so the next step fixes it; the prompt count is recorded to check a resume against."""
    position = {"next_step": next_step}
    if prompts_per_step:
        position.update(prompts_per_step=prompts_per_step, prompts_consumed=next_step * prompts_per_step)
    return position


def _record_resume(output_dir: Path, resume, context) -> None:
    """One line per resume in output_dir/resumes.jsonl: which checkpoint, from where."""
    import json

    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "step": resume.state["step"],
              "policy_version": resume.state.get("policy_version"), "source": resume.source,
              "world_size": context.get_world_size()}
    with open(output_dir / "resumes.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    print(f"[raylign] trainer resumes at step {record['step']} from {resume.source}", flush=True)
