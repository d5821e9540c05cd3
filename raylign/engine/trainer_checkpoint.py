"""The online trainer's resumable checkpoint: what it holds, where it lives, how a worker
group finds it again.

A checkpoint is one directory:

    config.json, model.safetensors, tokenizer files   the policy (HF format, loadable on its own)
    optimizer.pt                                      torch optimizer state (not with DeepSpeed)
    deepspeed/                                        DeepSpeed engine checkpoint, every rank's part
    trainer_extra.pt                                  trainable state beside the policy (PPO's critic)
    rng_state.pt                                      every rank's torch / CUDA / Python / NumPy RNG
    raylign_state.json                                step, policy version, data position,
                                                      the algorithm's update state, the step's report

Rank 0 writes it to `output_dir/latest/` (swapped in atomically) and reports it with
`ray.train.report(checkpoint=...)`, which copies it into the run's Ray Train storage
(`output_dir/ray_train`, the newest `trainer.keep_checkpoints` kept); every rank reports,
since a report is a collective. A restarted worker group (`FailureConfig`) takes
`ray.train.get_checkpoint()`; `latest/` is the fallback for a new driver continuing a run
(`engine.resume=true`) and for the moment between writing `latest/` and reporting it.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from raylign.algorithms.base import policy_of, unwrap
from raylign.collectives import distributed
from raylign.training.rng_state import gather_rng, load_rng, save_rng

STATE_FILE = "raylign_state.json"
OPTIMIZER_FILE = "optimizer.pt"
EXTRA_FILE = "trainer_extra.pt"
DEEPSPEED_DIR, DEEPSPEED_TAG = "deepspeed", "state"


@dataclass
class ResumePoint:
    folder: Path  # the checkpoint directory (valid inside `resume_point`'s with-block only)
    state: dict  # raylign_state.json
    source: str  # "ray.train.get_checkpoint()" or "latest/"


def read_state(folder: str | Path) -> dict | None:
    path = Path(folder) / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def read_resume_state(output_dir: str | Path) -> dict | None:
    """The state of `output_dir/latest/`, the run's newest checkpoint on disk."""
    return read_state(Path(output_dir) / "latest")


def prefer_reported(reported: dict | None, latest: dict | None) -> bool:
    """Whether to resume from Ray Train's reported checkpoint rather than `latest/`: yes
    unless it is missing or older. It is older when rank 0 died after writing `latest/` but
    before Ray Train's controller took the report (the report returns once the files are
    copied, and the controller collects it later). The rollout buffer frees the batches
    before a checkpoint once its report returns, so the newer checkpoint is the one whose
    batches are still there."""
    if reported is None:
        return False
    return latest is None or reported["step"] >= latest["step"]


@contextmanager
def resume_point(output_dir: Path) -> Iterator[ResumePoint | None]:
    """Where this worker group continues, or None for a fresh start. A fresh run starts with
    an empty output_dir (an old run is set aside), so any checkpoint found is this run's own.
    Rank 0 decides and every rank follows, so no two ranks start at different steps."""
    import ray.train

    latest = read_resume_state(output_dir)
    checkpoint = ray.train.get_checkpoint()
    with checkpoint.as_directory() if checkpoint is not None else nullcontext() as folder:
        reported = read_state(folder) if folder else None
        if reported is not None and prefer_reported(reported, latest):
            choice = "reported"
        else:
            choice = "latest" if latest else None
        choice = _from_rank_zero(choice)
        if choice == "reported":
            yield ResumePoint(Path(folder), reported, "ray.train.get_checkpoint()")
        elif choice == "latest":
            if latest is None:
                raise RuntimeError(f"rank 0 resumes from {output_dir}/latest, which this worker cannot see: "
                                   "engine.output_dir must be on a filesystem every node shares")
            yield ResumePoint(output_dir / "latest", latest, "latest/")
        else:
            yield None


def _from_rank_zero(value):
    if not distributed():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _barrier() -> None:
    if distributed():
        torch.distributed.barrier()


def _extra_state(module) -> dict:
    """Trainable state outside the policy (a PPO critic), saved beside the HF weights."""
    inner = unwrap(module)
    if not hasattr(inner, "policy"):
        return {}
    return {k: v for k, v in inner.state_dict().items() if not k.startswith("policy.")}


def write_checkpoint(folder: Path, module, optimizer, tokenizer, state: dict, rng_states: list[dict],
                     deepspeed: bool) -> None:
    """Rank 0's part of a checkpoint (everything but DeepSpeed's per-rank files)."""
    folder.mkdir(parents=True, exist_ok=True)
    policy_of(module).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if not deepspeed:
        torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
    extra = _extra_state(module)
    if extra:
        torch.save(extra, folder / EXTRA_FILE)
    save_rng(folder, rng_states)
    (folder / STATE_FILE).write_text(json.dumps(state))


def write_all_ranks(folder: Path, module, optimizer, tokenizer, state: dict, rng_states: list[dict],
                    deepspeed: bool, rank: int) -> None:
    """Every rank's part of a checkpoint into `folder`: DeepSpeed's per-rank files, then rank 0's."""
    if deepspeed:
        _barrier()
        module.save_checkpoint(str(folder / DEEPSPEED_DIR), tag=DEEPSPEED_TAG)
        _barrier()
    if rank == 0:
        write_checkpoint(folder, module, optimizer, tokenizer, state, rng_states, deepspeed)


def save_resumable(module, optimizer, tokenizer, output_dir: Path, state: dict, deepspeed: bool, rank: int) -> None:
    """Write `latest/` and report it to Ray Train. A collective: every rank calls it.

    DeepSpeed: every rank calls `engine.save_checkpoint` into the same staging folder, so
    `output_dir` must be on a filesystem all nodes share (which resuming from `latest/`
    already assumes). Run on one GPU by tests/gpu (docs/gpu.md); never with several ranks.
    """
    import ray.train

    step = state["step"]
    rng_states = gather_rng()
    staging = output_dir / f".latest-{step}"
    if rank == 0 and staging.exists():  # a half-written folder of a worker group that died
        shutil.rmtree(staging)
    write_all_ranks(staging, module, optimizer, tokenizer, state, rng_states, deepspeed, rank)
    if rank == 0:
        latest, old = output_dir / "latest", output_dir / f".old-{step}"
        if latest.exists():
            os.replace(latest, old)
        os.replace(staging, latest)
        shutil.rmtree(old, ignore_errors=True)
    metrics = {"step": step, "policy_version": state["policy_version"]}
    checkpoint = ray.train.Checkpoint.from_directory(str(output_dir / "latest")) if rank == 0 else None
    ray.train.report(metrics, checkpoint=checkpoint)


def load_resumable(point: ResumePoint, module, optimizer, deepspeed: bool, rank: int, world_size: int) -> None:
    """Restore what the HF weights do not carry: optimizer (or the DeepSpeed engine's whole
    state, on every rank), trainable state beside the policy, this rank's RNG."""
    folder = point.folder
    if deepspeed:
        if (folder / DEEPSPEED_DIR).exists():
            module.load_checkpoint(str(folder / DEEPSPEED_DIR), tag=DEEPSPEED_TAG,
                                   load_optimizer_states=True, load_lr_scheduler_states=True)
    elif (folder / OPTIMIZER_FILE).exists():
        optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, weights_only=True))
    if (folder / EXTRA_FILE).exists():
        unwrap(module).load_state_dict(torch.load(folder / EXTRA_FILE, weights_only=True), strict=False)
    load_rng(folder, rank, world_size)
