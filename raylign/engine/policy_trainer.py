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

from raylign.algorithms.base import Algorithm, TrainContext, policy_of
from raylign.engine.config import TrainerConfig
from raylign.engine.trainer_checkpoint import (
    load_resumable,
    resume_point,
    save_resumable,
)
from raylign.models.trainable import make_trainable
from raylign.training.optim import build_optimizer, build_scheduler
from raylign.training.step import MicroBatch, chunked, optimizer_step, split_even


def save_hf_checkpoint(model, tokenizer, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    policy_of(model).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def snapshot_dir(output_dir: Path, step: int) -> Path:
    """Where `engine.trainer.snapshot_every` puts the policy after `step` updates."""
    return Path(output_dir) / "snapshots" / f"step_{step:04d}"


def _build(cfg: dict, start_path: str, algorithm: Algorithm):
    from transformers import AutoModelForCausalLM

    from raylign.models.chat import load_tokenizer

    trainer: TrainerConfig = cfg["trainer"]
    torch.manual_seed(trainer.seed)
    policy = AutoModelForCausalLM.from_pretrained(start_path, dtype=torch.float32)
    policy.config.use_cache = False
    if trainer.trainable != "all":  # a fresh model trains every weight already
        make_trainable(policy, trainer.trainable, trainer.top_layers, trainer.lora, "CAUSAL_LM")
    if trainer.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    module = algorithm.build_module(policy)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    groups = algorithm.parameter_groups(module, trainer.optim.lr)
    tokenizer = load_tokenizer(start_path)
    if trainer.deepspeed_config:
        import deepspeed

        engine, optimizer, _, _ = deepspeed.initialize(model=module, model_parameters=groups,
                                                       config=deepspeed_settings(trainer))
        return engine, optimizer, tokenizer, trainable
    module = wrap_data_parallel(module)
    return module, build_optimizer(groups, trainer.optim), tokenizer, trainable


def deepspeed_settings(trainer: TrainerConfig) -> dict:
    """The DeepSpeed JSON with the recipe's optimizer settings laid over it, so `optim` stays
    their one home on a GPU cluster too (lr, weight decay, gradient clipping)."""
    import json

    settings = json.loads(Path(trainer.deepspeed_config).read_text())
    optimizer = settings.setdefault("optimizer", {"type": "AdamW", "params": {"torch_adam": True}})
    optimizer.setdefault("params", {}).update(lr=trainer.optim.lr, weight_decay=trainer.optim.weight_decay)
    settings["gradient_clipping"] = trainer.optim.max_grad_norm or 0.0
    return settings


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
                   plan: tuple[int, int, int], deepspeed: bool, max_grad_norm: float | None, seed: int,
                   scheduler=None) -> dict[str, float]:
    """One rollout batch: prepare, then epochs x minibatches of optimizer steps. Every rank
    takes the same number of optimizer steps (the minibatch count does not depend on data)."""
    epochs, num_minibatches, micro_size = plan
    # the plan the method sees is the one run here (a method must not guess it from its own defaults)
    context.epochs, context.num_minibatches = epochs, num_minibatches
    live = [u for u in units if not algorithm.inert(u)]
    module.eval()
    context.num_real_units = len(live)  # batch statistics count these; a filler rides along at weight 0
    with torch.no_grad():
        metrics = dict(algorithm.prepare(module, live + ([filler] if filler is not None else []), context))
    module.train()

    def loss_fn(model, chunk):
        return algorithm.loss(model, chunk, context)

    steps: list[dict] = []
    for epoch in range(epochs):
        order = list(units)
        if epoch:
            random.Random(seed * 1009 + epoch).shuffle(order)
        for minibatch in split_even(order, num_minibatches):
            micro = micro_batches(algorithm, minibatch, micro_size)
            filler_micro = MicroBatch([filler], 0.0) if filler is not None else None
            steps.append(optimizer_step(module, optimizer, micro, loss_fn, deepspeed=deepspeed,
                                        max_grad_norm=max_grad_norm, filler=filler_micro, scheduler=scheduler))
    for key in sorted({k for s in steps for k in s}):
        values = [s[key] for s in steps if key in s]
        metrics[key] = sum(values) / len(values)
    metrics["optimizer_steps"] = float(len(steps))
    metrics["inert_unit_fraction"] = (len(units) - len(live)) / len(units) if units else 0.0
    return metrics


def micro_batches(algorithm: Algorithm, minibatch: list, micro_size: int) -> list[MicroBatch]:
    """The minibatch's units that carry a gradient, in micro-batches; the weight of the inert
    ones (`Algorithm.inert`) still counts in the first, so the loss is normalised exactly as if
    they had run. A minibatch of inert units only keeps one, so every rank still steps."""
    live = [u for u in minibatch if not algorithm.inert(u)] or minibatch[:1]
    skipped = sum(algorithm.unit_weight(u) for u in minibatch) - sum(algorithm.unit_weight(u) for u in live)
    micro = [MicroBatch(chunk, sum(algorithm.unit_weight(u) for u in chunk)) for chunk in chunked(live, micro_size)]
    if micro:
        micro[0].weight += skipped
    return micro


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
    # DeepSpeed steps its own optimizer wrapper; the recipe's schedule is a torch scheduler
    scheduler = None if deepspeed else build_scheduler(optimizer, trainer.optim, cfg["num_iterations"] * plan[0] * plan[1],
                                                       done_steps=start_step * plan[0] * plan[1])
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
                                 trainer.optim.max_grad_norm, trainer.seed + step, scheduler)
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
        if rank == 0 and trainer.snapshot_every and (step + 1) % trainer.snapshot_every == 0:
            save_hf_checkpoint(module, tokenizer, snapshot_dir(output_dir, step + 1))
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
