"""The policy trainer: a Ray Train `TorchTrainer` worker group.

Each worker pulls its shard of step i's scored rollouts from the RolloutBuffer,
computes the algorithm's loss, and takes a data-parallel step (gloo on CPU, NCCL on
GPU, DeepSpeed ZeRO when configured). Rank 0 then pushes the new weights to every
sampler (versioned sync), reports metrics, and writes HF-format checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch

from raylign.config import StrictModel


class TrainerConfig(StrictModel):
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    trainable_layers: int | None = None  # train only the top N decoder layers (+ final norm); None = all
    max_length: int = 768
    deepspeed_config: str | None = None  # DeepSpeed JSON (GPU clusters), e.g. cluster/deepspeed_zero2.json
    save_every: int = 0  # steps between resumable checkpoints; 0 = only the final one
    seed: int = 0


# A group loss takes (model, groups, pad_id, max_length) and returns (loss, metrics, tokens).
GroupLoss = Callable[[torch.nn.Module, list, int, int], tuple]


def freeze_lower_layers(model, trainable_layers: int | None) -> int:
    """Keep only the top N blocks (plus the final norm) trainable; returns #trainable params.

    The same freezing the reward-model trainer uses, so both stop backward at the same place.
    """
    from raylign.training.reward_model_trainable import freeze_to_top_layers

    if trainable_layers is not None:
        freeze_to_top_layers(model, trainable_layers)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _unwrap(model):
    return getattr(model, "module", model)


def save_hf_checkpoint(model, tokenizer, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    _unwrap(model).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


def read_resume_state(output_dir: str | Path) -> dict | None:
    state = Path(output_dir) / "latest" / "raylign_state.json"
    return json.loads(state.read_text()) if state.exists() else None


def _build(cfg: dict, start_path: str):
    from transformers import AutoModelForCausalLM

    from raylign.models.chat import load_tokenizer

    trainer: TrainerConfig = cfg["trainer"]
    torch.manual_seed(trainer.seed)
    model = AutoModelForCausalLM.from_pretrained(start_path, dtype=torch.float32)
    model.config.use_cache = False
    trainable = freeze_lower_layers(model, trainer.trainable_layers)
    params = [p for p in model.parameters() if p.requires_grad]
    if trainer.deepspeed_config:
        import deepspeed

        engine, optimizer, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=trainer.deepspeed_config)
        return engine, optimizer, load_tokenizer(start_path), trainable
    import ray.train.torch

    model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": False})
    optimizer = torch.optim.AdamW(params, lr=trainer.learning_rate, weight_decay=trainer.weight_decay)
    return model, optimizer, load_tokenizer(start_path), trainable


def policy_train_loop(cfg: dict) -> None:
    """Ray Train entry point (runs on every worker)."""
    import ray
    import ray.train

    from raylign.engine.weight_sync import make_weight_sync

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    trainer: TrainerConfig = cfg["trainer"]
    output_dir = Path(cfg["output_dir"])
    buffer, group_loss = cfg["buffer"], cfg["group_loss"]
    resume = read_resume_state(output_dir) if cfg["resume"] else None
    start_step = resume["step"] if resume else 0
    start_path = str(output_dir / "latest") if resume else cfg["model_path"]
    model, optimizer, tokenizer, trainable = _build(cfg, start_path)
    if resume and (output_dir / "latest" / "optimizer.pt").exists() and not trainer.deepspeed_config:
        optimizer.load_state_dict(torch.load(output_dir / "latest" / "optimizer.pt", weights_only=True))
    sync = make_weight_sync(cfg["samplers"], cfg["weight_sync"]) if rank == 0 else None
    deepspeed = trainer.deepspeed_config is not None
    previous_end = time.perf_counter()

    for step in range(start_step, cfg["num_iterations"]):
        groups = ray.get(buffer.get.remote(step, rank, world))
        if groups is None:  # the rollout stream ended early (an error the driver reports)
            return
        start = time.perf_counter()
        model.train()
        loss_sum, totals, tokens = 0.0, {}, 0
        for index, group in enumerate(groups):
            last = index == len(groups) - 1
            context_manager = model.no_sync() if (hasattr(model, "no_sync") and not last and not deepspeed) else nullcontext()
            with context_manager:
                loss, metrics, used = group_loss(model, group, tokenizer.pad_token_id, trainer.max_length)
                scaled = loss / len(groups)
                model.backward(scaled) if deepspeed else scaled.backward()
            loss_sum += loss.item()
            tokens += used
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + float(value) / len(groups)
        if deepspeed:
            model.step()
        else:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], trainer.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        train_seconds = time.perf_counter() - start
        version = step + 1
        if rank == 0:
            staleness = [step - r["policy_version"] for g in groups for r in g if r.get("source") != "dataset"]
            sync_stats = sync.push(_unwrap(model).state_dict(), version)
            report = {
                **totals,
                "loss": loss_sum / max(1, len(groups)),
                "policy_version": version,
                "train_seconds": train_seconds,
                "train_tokens_per_s": tokens * world / max(train_seconds, 1e-9),
                "staleness_max": max(staleness, default=0),
                "staleness_mean": sum(staleness) / max(1, len(staleness)),
                "trainable_params": trainable,
                **sync_stats,
            }
            now = time.perf_counter()
            # Wall time per step as the trainer lives it: waiting for rollouts + update + sync.
            report["iteration_seconds"] = now - previous_end
            previous_end = now
            if trainer.save_every and version % trainer.save_every == 0 and version < cfg["num_iterations"]:
                _save_resumable(model, optimizer, tokenizer, output_dir, version, deepspeed)
            ray.get(buffer.report.remote(step, report))
    if rank == 0:
        save_hf_checkpoint(model, tokenizer, output_dir / "final")


def _save_resumable(model, optimizer, tokenizer, output_dir: Path, version: int, deepspeed: bool) -> None:
    """HF weights + optimizer state + step, written to a temp dir and swapped in atomically."""
    tmp = output_dir / f".latest-{version}"
    save_hf_checkpoint(model, tokenizer, tmp)
    if not deepspeed:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "raylign_state.json").write_text(json.dumps({"step": version}))
    latest = output_dir / "latest"
    old = output_dir / f".old-{version}"
    if latest.exists():
        os.replace(latest, old)
    os.replace(tmp, latest)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
