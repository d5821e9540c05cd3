"""The per-worker training loop of `raylign train rm`, run by a Ray Train TorchTrainer.

Each worker loads the backbone, wraps it for data parallelism with
`ray.train.torch.prepare_model`, trains on its shard of length-grouped batches with the
Bradley-Terry loss, and joins all-reduced validation passes (which drive early
stopping identically on every worker). Rank 0 writes the HF checkpoint and metrics.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from raylign.scoring.losses import bradley_terry_loss, pairwise_correct
from raylign.scoring.reward_model import PairScorer, load_reward_model, pad_batch
from raylign.training.reward_model_config import RewardTrainConfig
from raylign.training.reward_model_data import TokenizedPair, length_grouped_batches, shard_batches, shard_items
from raylign.training.reward_model_trainable import count_parameters, head_names, make_trainable


def _all_reduce_sum(values: list[float]) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def _lr_factor(schedule: str, step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else max(0.0, 1 - progress)


def _autocast(bf16: bool, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _pair_scores(scorer, pairs: list[TokenizedPair], pad_id: int, device, bf16: bool):
    """Chosen and rejected scores from one forward pass over both halves."""
    ids, mask = pad_batch([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    with _autocast(bf16, device):
        scores = scorer(ids.to(device), mask.to(device))
    return scores[: len(pairs)], scores[len(pairs) :]


def evaluate_pairs(scorer, pairs: list[TokenizedPair], pad_id: int, device, bf16: bool, batch_size: int) -> dict:
    """Loss and accuracy over `pairs`, this worker's shard all-reduced with the others'."""
    rank, world = _rank_world()
    mine = [pairs[i] for i in shard_items(len(pairs), rank, world)]
    mine.sort(key=lambda p: p.length)
    loss_sum = correct_sum = 0.0
    was_training = scorer.training
    scorer.eval()
    with torch.no_grad():
        for start in range(0, len(mine), batch_size):
            chosen, rejected = _pair_scores(scorer, mine[start : start + batch_size], pad_id, device, bf16)
            loss_sum += float(bradley_terry_loss(chosen, rejected)) * len(chosen)
            correct_sum += float(pairwise_correct(chosen, rejected).sum())
    scorer.train(was_training)
    loss_sum, correct_sum, count = _all_reduce_sum([loss_sum, correct_sum, float(len(mine))])
    return {"loss": loss_sum / max(count, 1), "accuracy": correct_sum / max(count, 1), "pairs": int(count)}


def _rank_world() -> tuple[int, int]:
    import ray.train

    context = ray.train.get_context()
    return context.get_world_rank(), context.get_world_size()


class MetricsLog:
    """Rank 0's metrics.jsonl, one JSON object per line."""

    def __init__(self, path: Path | None):
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def write(self, record: dict) -> None:
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps(record) + "\n")


def save_reward_model(model, tokenizer, out_dir: Path, config: RewardTrainConfig) -> None:
    """An HF directory plain transformers loads; LoRA runs also keep their adapter in adapter/."""
    if hasattr(model, "merge_and_unload"):
        model.save_pretrained(out_dir / "adapter")
        model = model.merge_and_unload()
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "raylign_rm.json").write_text(
        json.dumps({"base_model": config.model, "max_length": config.data.max_length, "trainable": config.trainable})
    )


def train_loop_per_worker(loop_config: dict) -> None:
    import ray
    import ray.train
    import ray.train.torch
    from tqdm import tqdm

    config = RewardTrainConfig.model_validate(loop_config["config"])
    data = ray.get(loop_config["pairs_ref"])
    train_pairs, val_pairs, test_pairs = data["train"], data["validation"], data["test"]
    rank, world = _rank_world()
    threads = config.torch_threads or max(1, round(config.cpus_per_worker))
    torch.set_num_threads(threads)
    torch.manual_seed(config.seed)

    model, tokenizer, _ = load_reward_model(loop_config["model_path"], head_seed=config.seed)
    model = make_trainable(model, config.trainable, config.top_layers, config.lora)
    trained, total = count_parameters(model)
    pad_id = tokenizer.pad_token_id
    device = ray.train.torch.get_device()
    scorer = ray.train.torch.prepare_model(PairScorer(model))

    heads = tuple(f"{h}." for h in head_names(model.get_base_model() if hasattr(model, "get_base_model") else model))
    head_params, body_params = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            is_head = any(f".{h}" in f".{name}" for h in heads)
            (head_params if is_head else body_params).append(param)
    groups = [{"params": body_params, "lr": config.lr}]
    if head_params:
        groups.append({"params": head_params, "lr": config.head_lr or config.lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]

    lengths = [p.length for p in train_pairs]
    per_epoch = len(shard_batches(length_grouped_batches(len(train_pairs), lengths, config.batch_size, 0), 0, world))
    total_steps = max(1, config.epochs * per_epoch // config.grad_accum)
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    warmup = int(config.warmup_ratio * total_steps)

    out_dir = Path(loop_config["output_dir"])
    log = MetricsLog(out_dir / "metrics.jsonl" if rank == 0 else None)
    if rank == 0:
        print(f"[rm] {len(train_pairs)} train / {len(val_pairs)} validation / {len(test_pairs)} test pairs; "
              f"{world} worker(s); training {trained:,} of {total:,} parameters; {total_steps} optimizer steps",
              flush=True)
    trainable_params = [p for p in model.parameters() if p.requires_grad]
    best = {"accuracy": -1.0, "loss": float("inf"), "step": 0}
    best_state = None
    stale_evals = 0
    step = 0
    started = time.time()
    running = {"loss": 0.0, "acc": 0.0, "n": 0}
    progress = tqdm(total=total_steps, desc="rm train", disable=rank != 0, mininterval=15, file=sys.stderr)

    def validate() -> bool:
        """Run validation; True when training should stop early."""
        nonlocal best_state, stale_evals
        if not val_pairs:
            return False
        metrics = evaluate_pairs(scorer, val_pairs, pad_id, device, config.bf16, config.eval_batch_size)
        improved = (metrics["accuracy"], -metrics["loss"]) > (best["accuracy"], -best["loss"])
        if improved:
            best.update(accuracy=metrics["accuracy"], loss=metrics["loss"], step=step)
            stale_evals = 0
            if config.keep_best:
                best_state = [p.detach().clone() for p in trainable_params]
        else:
            stale_evals += 1
        record = {"step": step, "split": "validation", **metrics, "elapsed_s": round(time.time() - started, 1)}
        log.write(record)
        if rank == 0:
            print(f"[rm] step {step}: validation loss {metrics['loss']:.4f} accuracy {metrics['accuracy']:.4f}", flush=True)
        ray.train.report({"step": step, "val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"]})
        return config.early_stop_patience is not None and stale_evals >= config.early_stop_patience

    stop = False
    scorer.train()
    for epoch in range(config.epochs):
        batches = shard_batches(length_grouped_batches(len(train_pairs), lengths, config.batch_size, config.seed + epoch), rank, world)
        micro = 0  # an accumulation group left incomplete by the previous epoch is dropped
        optimizer.zero_grad(set_to_none=True)
        for batch in batches:
            micro += 1
            sync = micro % config.grad_accum == 0
            no_sync = getattr(scorer, "no_sync", None)
            with (no_sync() if (no_sync and not sync) else contextlib.nullcontext()):
                chosen, rejected = _pair_scores(scorer, [train_pairs[i] for i in batch], pad_id, device, config.bf16)
                loss = bradley_terry_loss(chosen, rejected)
                (loss / config.grad_accum).backward()
            running["loss"] += float(loss) * len(batch)
            running["acc"] += float(pairwise_correct(chosen.detach(), rejected.detach()).sum())
            running["n"] += len(batch)
            if not sync:
                continue
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable_params, config.max_grad_norm)
            factor = _lr_factor(config.schedule, step, warmup, total_steps)
            for group, base_lr in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base_lr * factor
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            progress.update(1)
            if step % config.log_every == 0 or step == total_steps:
                loss_sum, acc_sum, n = _all_reduce_sum([running["loss"], running["acc"], float(running["n"])])
                log.write({"step": step, "epoch": epoch, "split": "train", "loss": loss_sum / max(n, 1),
                           "accuracy": acc_sum / max(n, 1), "lr": optimizer.param_groups[0]["lr"],
                           "grad_norm": float(grad_norm), "elapsed_s": round(time.time() - started, 1)})
                running = {"loss": 0.0, "acc": 0.0, "n": 0}
            if config.eval_every and step % config.eval_every == 0 and validate():
                stop = True
            if stop or step >= total_steps:
                break
        if stop or step >= total_steps:
            break
    progress.close()
    if not (config.eval_every and step % config.eval_every == 0):
        validate()
    if config.keep_best and best_state is not None and best["step"] != step:
        with torch.no_grad():
            for param, saved in zip(trainable_params, best_state):
                param.copy_(saved)
        if rank == 0:
            print(f"[rm] restored the best validation weights (step {best['step']})", flush=True)

    final = {"step": step, "best_step": best["step"], "train_seconds": round(time.time() - started, 1)}
    if test_pairs:
        test = evaluate_pairs(scorer, test_pairs, pad_id, device, config.bf16, config.eval_batch_size)
        final.update(test_loss=test["loss"], test_accuracy=test["accuracy"], test_pairs=test["pairs"])
        log.write({"step": step, "split": "test", **test})
        if rank == 0:
            print(f"[rm] test loss {test['loss']:.4f} accuracy {test['accuracy']:.4f} on {test['pairs']} pairs", flush=True)
    if rank == 0:
        with tempfile.TemporaryDirectory(prefix="raylign-rm-") as tmp:
            save_reward_model(model, tokenizer, Path(tmp), config)
            if log.path is not None:
                (Path(tmp) / "metrics.jsonl").write_text(log.path.read_text())
            ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(final)
