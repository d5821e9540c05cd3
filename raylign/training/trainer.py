"""The offline trainer: one Ray Train `TorchTrainer` over Ray Data shards, for any `OfflineObjective`.

Driver (`run_offline`): read train / validation / test with Ray Data (never into the
driver), run the objective's `map_batches` stages (tokenising, reference log-probs),
and start a worker group with `datasets=`; the train split is streamed to the workers
with `ray.train.get_dataset_shard`. Workers (`train_loop_per_worker`): length-grouped
micro-batches, steps through the shared `optimizer_step` (global-weight normalisation,
equal micro-steps per rank, DDP no_sync), a `transformers.get_scheduler` schedule,
bf16 autocast, evaluation every N steps with early stop and best-weight keeping,
resumable checkpoints through `ray.train.report(checkpoint=...)` (a failed worker group
restarts from the last one: `max_failures`), and a plain HF directory at the end.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from raylign.algorithms.objective import OfflineObjective
from raylign.collectives import all_reduce
from raylign.training.batching import length_grouped, plain
from raylign.training.optim import build_optimizer, build_scheduler
from raylign.training.rng_state import gather_rng
from raylign.training.state import (
    MetricsLog,
    better,
    evaluate,
    load_state,
    save_state,
    trainable_state,
)
from raylign.training.step import MicroBatch, optimizer_step

SPLITS = ("train", "validation", "test")


def total_steps(config, train_rows: int, world: int) -> int:
    """Optimizer steps the run takes: per rank ceil(rows/world/batch) micro-batches per epoch."""
    per_rank = math.ceil(train_rows / max(1, world))
    micro = math.ceil(per_rank / config.batch_size)
    steps = config.epochs * math.ceil(micro / config.grad_accum)
    return max(1, min(steps, config.max_steps) if config.max_steps else steps)


def _autocast(enabled: bool, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def _split_rows(name: str, rank: int, world: int, counts: dict) -> list[dict]:
    """This rank's share (every world-th row) of an unsplit evaluation dataset."""
    import ray.train

    if not counts.get(name):
        return []
    shard = ray.train.get_dataset_shard(name)
    return [plain(row) for i, row in enumerate(shard.iter_rows()) if i % world == rank]


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch
    from tqdm import tqdm

    from raylign.models.trainable import count_parameters, make_trainable

    objective: OfflineObjective = loop_config["objective"]
    config = objective.config
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(config.torch_threads or max(1, round(config.cpus_per_worker)))
    torch.manual_seed(config.seed)

    model, tokenizer = objective.build_model(loop_config["model_path"])
    objective.pad_id = tokenizer.pad_token_id
    model = make_trainable(model, config.trainable, config.top_layers, config.lora, objective.lora_task)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trained, total = count_parameters(model)
    inner = objective.forward_module(model)
    module = ray.train.torch.prepare_model(inner)
    device = ray.train.torch.get_device()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(objective.param_groups(model), config.optim)
    steps_total = total_steps(config, loop_config["counts"]["train"], world)
    scheduler = build_scheduler(optimizer, config.optim, steps_total)

    progress = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "best": None, "best_step": 0, "stale": 0,
                "resumed_from": None}
    best_state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            progress, best_state = load_state(Path(folder), model, optimizer, scheduler, rank, world)
        progress["resumed_from"] = progress["step"]
    out_dir = Path(loop_config["output_dir"])
    log = MetricsLog(out_dir / "metrics.jsonl" if rank == 0 else None, fresh=checkpoint is None)
    if rank == 0:
        print(f"[{objective.name}] {loop_config['counts']} {objective.unit}; {world} worker(s); training {trained:,} "
              f"of {total:,} parameters; {steps_total} optimizer steps"
              + (f"; resumed at step {progress['step']}" if checkpoint is not None else ""), flush=True)

    def loss_fn(mod, data):
        with _autocast(config.bf16, device):
            return objective.loss(mod, data)

    eval_rows = {name: _split_rows(name, rank, world, loop_config["counts"]) for name in ("validation", "test")}
    started = time.time()

    def run_eval(split: str) -> dict | None:
        if not loop_config["counts"].get(split):
            return None
        metrics = evaluate(inner, eval_rows[split], objective.collate, loss_fn, config.eval_batch_size)
        log.write({"step": progress["step"], "split": split, **metrics, "elapsed_s": round(time.time() - started, 1)})
        if rank == 0:
            shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "rows")
            print(f"[{objective.name}] step {progress['step']}: {split} {shown}", flush=True)
        return metrics

    def validate() -> bool:
        """Evaluate on validation, track the best weights; True when training should stop."""
        nonlocal best_state
        metrics = run_eval("validation")
        if metrics is None:
            return False
        value = metrics[objective.select_metric]
        if better(value, progress["best"], objective.select_mode):
            progress.update(best=value, best_step=progress["step"], stale=0)
            if config.keep_best:
                best_state = trainable_state(model)
        else:
            progress["stale"] += 1
        ray.train.report({"step": progress["step"], **{f"val_{k}": v for k, v in metrics.items()}})
        return config.early_stop_patience is not None and progress["stale"] >= config.early_stop_patience

    def save_checkpoint() -> None:
        record = {"step": progress["step"], "checkpoint": True}
        rng_states = gather_rng()  # every rank's, gathered to rank 0
        if rank == 0:
            with tempfile.TemporaryDirectory(prefix="raylign-offline-") as tmp:
                save_state(Path(tmp), model, optimizer, scheduler, progress, best_state, rng_states)
                ray.train.report(record, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(record)

    if config.eval_at_start and checkpoint is None:
        run_eval("validation")
        start_test = run_eval("test")
        if start_test is not None:
            progress["start_test"] = {k: v for k, v in start_test.items() if k != "rows"}
    stop = False
    window: list[tuple[float, dict]] = []
    bar = tqdm(total=steps_total, initial=progress["step"], desc=f"{objective.name} train", disable=rank != 0,
               mininterval=15, file=sys.stderr)
    filler = None
    module.train()
    shard = ray.train.get_dataset_shard("train")
    while progress["epoch"] < config.epochs and progress["step"] < steps_total and not stop:
        epoch = progress["epoch"]
        batches = length_grouped(shard.iter_rows(), config.batch_size, config.length_window,
                                 config.seed + 1000 * epoch + rank)
        for _ in range(progress["batches_in_epoch"]):  # resume: skip what the checkpoint consumed
            next(batches, None)
        exhausted = False
        while progress["step"] < steps_total:
            rows = [b for b in (next(batches, None) for _ in range(config.grad_accum)) if b]
            micro = [MicroBatch(objective.collate(b), objective.weight(b)) for b in rows]
            if all_reduce([len(micro)], op="max")[0] == 0:
                exhausted = True
                break
            filler = micro[-1] if micro else filler
            metrics = optimizer_step(module, optimizer, micro, loss_fn, max_grad_norm=config.optim.max_grad_norm,
                                     scheduler=scheduler, filler=filler, params=params)
            progress["step"] += 1
            progress["batches_in_epoch"] += len(rows)
            bar.update(1)
            window.append((metrics.get("global_weight", 1.0), metrics))
            if progress["step"] % config.log_every == 0 or progress["step"] == steps_total:
                weight = sum(w for w, _ in window)
                keys = {k for _, m in window for k in m if k not in ("global_weight", "micro_steps")}
                mean = {k: sum(w * m.get(k, 0.0) for w, m in window) / weight for k in sorted(keys)}
                log.write({"step": progress["step"], "epoch": epoch, "split": "train", **mean,
                           "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - started, 3)})
                window = []
            if config.eval_every and progress["step"] % config.eval_every == 0 and validate():
                stop = True
                break
            if config.save_every and progress["step"] % config.save_every == 0:
                save_checkpoint()
        if exhausted:
            progress["epoch"] += 1
            progress["batches_in_epoch"] = 0
    bar.close()
    if not (config.eval_every and progress["step"] % config.eval_every == 0):
        validate()
    if config.keep_best and best_state is not None and progress["best_step"] != progress["step"]:
        from raylign.training.state import load_trainable

        load_trainable(model, best_state)
        if rank == 0:
            print(f"[{objective.name}] restored the best validation weights (step {progress['best_step']})", flush=True)

    final = {"step": progress["step"], "best_step": progress["best_step"], "resumed_from": progress["resumed_from"],
             "train_seconds": round(time.time() - started, 1)}
    for key, value in (progress.get("start_test") or {}).items():
        final[f"start_test_{key}"] = value
    test = run_eval("test")
    if test is not None:
        final.update({f"test_{k}": v for k, v in test.items()})
    if rank == 0:
        with tempfile.TemporaryDirectory(prefix="raylign-offline-") as tmp:
            objective.save(model, tokenizer, Path(tmp))
            if log.path is not None:
                (Path(tmp) / "metrics.jsonl").write_text(log.path.read_text())
            ray.train.report(final, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    else:
        ray.train.report(final)


def prepare_datasets(config, objective: OfflineObjective, model_path: str) -> tuple[dict, dict]:
    """Ray Data datasets of token rows per split, and their row counts (empty splits left out)."""
    from raylign.data.datasets import read_split
    from raylign.data.readers import DataError

    datasets, counts = {}, {}
    for split in SPLITS:
        fractions = {"validation": config.data.validation_fraction,
                     "test": config.data.test_fraction if not config.data.test_path else 1.0}
        if fractions.get(split, 1.0) <= 0:
            continue
        ds = objective.prepare_dataset(objective.augment(read_split(config.data, objective.row_kind, split), split),
                                       model_path)
        if config.materialize:
            ds = ds.materialize()
        count = ds.count()
        if count:
            datasets[split], counts[split] = ds, count
        elif split != "train":
            print(f"[{objective.name}] warning: data.{split}_fraction is {fractions[split]} but no {objective.unit} "
                  f"of {config.data.path} hash to {split} under split_seed {config.data.split_seed} (were they "
                  f"picked as another split with the same seed? another data.split_seed separates them)", flush=True)
    if not counts.get("train"):
        raise DataError(f"{config.data.path}: no training {objective.unit} left after the split and length filter")
    return datasets, counts


def run_name(objective_name: str, recipe_text: str, data_path: str | None) -> str:
    """The Ray Train run's name: the same recipe on the same data file gives the same name, so a
    rerun after an interruption finds that run's checkpoints in storage and resumes from them;
    a changed recipe or data file starts a fresh run."""
    import hashlib

    digest = hashlib.sha256(recipe_text.encode())
    if data_path and Path(data_path).is_file():
        stat = Path(data_path).stat()
        digest.update(f"{Path(data_path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return f"{objective_name}-{digest.hexdigest()[:12]}"


def run_offline(config, objective: OfflineObjective) -> dict:
    """Train `objective` as `config` says; returns the summary written to train_summary.json."""
    import ray.data
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchConfig, TorchTrainer

    from raylign.config import dump_config
    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray

    started = time.time()
    model_path = str(resolve_model(config.model))
    output_dir = Path(config.output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "recipe.yaml").write_text(dump_config(config))
    init_ray(config.ray_address)
    # `limit` and the resume position rely on a stable row order.
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    datasets, counts = prepare_datasets(config, objective, model_path)
    print(f"[{objective.name}] {objective.unit}: {json.dumps(counts)}", flush=True)
    storage = output_dir / ".ray_train"
    name = run_name(objective.name, dump_config(config), config.data.path)
    if (storage / name / "checkpoint_manager_snapshot.json").exists():
        print(f"[{objective.name}] resuming the interrupted run in {storage / name} "
              "(delete that folder to start over)", flush=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"objective": objective, "model_path": model_path, "output_dir": str(output_dir),
                           "counts": counts},
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=config.num_workers, use_gpu=config.use_gpu,
                                     resources_per_worker={"CPU": config.cpus_per_worker,
                                                           **({"GPU": 1} if config.use_gpu else {})}),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=config.max_failures),
                             # the newest resumable checkpoint and the final model
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{objective.name} training produced no checkpoint (error: {result.error})")
    result.checkpoint.to_directory(str(output_dir))
    (output_dir / "train_state.pt").unlink(missing_ok=True)
    shutil.rmtree(storage, ignore_errors=True)
    summary = {**(result.metrics or {}), "counts": {k: {objective.unit: v} for k, v in counts.items()},
               "wall_seconds": round(time.time() - started, 1), "model_dir": str(output_dir)}
    (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
