"""The distributed RLHF loop every algorithm runs on.

    prompts --Ray Data--> sample (sampler actors) --> score (RewardSource) --> RolloutBuffer
                                                                                   |
    samplers <--versioned weight sync-- Ray Train workers (policy update) <--------+

The driver feeds the Ray Data stream into the buffer from a background thread while
`TorchTrainer.fit()` runs; with `max_staleness >= 1` the next step is sampled and
scored while the current one trains. Prompts come one step at a time from a step server
that reads the prompt file with Ray Data (`raylign.data.step_prompts`), so the driver
never holds the corpus.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import ray

from raylign.algorithms.base import Algorithm
from raylign.config import ConfigError
from raylign.data.prompt_corpus import PromptCorpus
from raylign.data.step_prompts import fetch_steps, start_step_server, step_rows_stage
from raylign.engine.algorithm_state import load_algorithm_state, save_algorithm_state
from raylign.engine.buffer import RolloutBuffer
from raylign.engine.config import EngineConfig
from raylign.engine.policy_trainer import policy_train_loop
from raylign.engine.stages import SampleSettings, sample_batch, sample_stage, score_batch, score_stage
from raylign.engine.trainer_checkpoint import read_resume_state
from raylign.engine.weight_sync import WeightSyncConfig
from raylign.metrics import (
    MetricsLogger,
    drop_metrics_after,
    last_logged_step,
    progress,
)
from raylign.models.chat import save_prompt_prefix
from raylign.sampling.actor import create_samplers
from raylign.sampling.base import SamplingConfig
from raylign.scoring.base import RewardSource

log = logging.getLogger(__name__)


def wire_dtype_for(sampling: SamplingConfig, sync: WeightSyncConfig) -> WeightSyncConfig:
    """`auto` sends weights in the dtype the samplers run in (vLLM on CPU: bf16), halving the bytes."""
    if sync.dtype != "auto":
        return sync
    if sampling.dtype != "auto":
        return sync.model_copy(update={"dtype": sampling.dtype})
    if sampling.backend == "vllm" and not sampling.num_gpus_per_sampler:
        return sync.model_copy(update={"dtype": "bfloat16"})
    return sync


def restartable_sampling(sampling: SamplingConfig, sync: WeightSyncConfig) -> SamplingConfig:
    """Sampler restarts off under the NCCL transport: a restarted vLLM engine would not be in
    the group the trainer broadcasts to (rejoining is not implemented), so a dead sampler
    ends the run with an error naming it instead of hanging the next broadcast."""
    if sync.transport != "nccl" or not sampling.max_restarts:
        return sampling
    logging.getLogger(__name__).warning("weight_sync.transport=nccl: sampler restarts are off "
                                        "(a restarted sampler cannot rejoin the NCCL group yet)")
    return sampling.model_copy(update={"max_restarts": 0})


def _best_examples(rows: list[dict], count: int = 2) -> list[dict]:
    """The highest-reward policy samples of a step, for the console."""
    policy = sorted((r for r in rows if r.get("source") != "dataset"), key=lambda r: -r["reward"])
    keys = ("prompt", "response", "reward", "policy_version", "sampler")
    return [{k: r.get(k) for k in keys} for r in policy[:count]]


def _rollout_stats(rows: list[dict]) -> dict[str, float]:
    policy = [r for r in rows if r.get("source") != "dataset"] or rows
    rewards = [r["reward"] for r in policy]
    tokens = sum(len(r["response_token_ids"]) for r in policy)
    sample_seconds = max(r["sample_seconds"] for r in rows)
    return {
        "reward_mean": statistics.fmean(rewards),
        "reward_max": max(rewards),
        "reward_min": min(rewards),
        "reward_std": statistics.pstdev(rewards),
        "response_tokens_mean": tokens / len(policy),
        # responses that ended with EOS: a falling curve is the never-stop reward hack
        "stopped_fraction": sum(r.get("finish_reason") == "stop" for r in policy) / len(policy),
        "rollouts": len(rows),
        "sample_seconds": sample_seconds,
        "sample_tokens_per_s": tokens / max(sample_seconds, 1e-9),
        "score_seconds": max(r["score_seconds"] for r in rows),
        "sampler_retries": max(r.get("sampler_retries", 0) for r in rows),
    }


STEPS_PER_STREAM = 256  # steps per Ray Data execution: one block each, so the driver's share stays small


def step_is_whole(rows: list[dict]) -> bool:
    """Every prompt of the step was sampled and every rollout of it arrived.

    A step may reach the feeder in several pieces (a step split over Ray Data blocks is
    sampled part by part): each `sample_batch` call stamps its rollouts with its `part`, the
    rows it made (`rows_in_batch`) and the prompts it was given (`part_prompts`), and the step
    is whole when its complete parts cover its `step_prompts`.
    """
    parts: dict = {}
    for row in rows:
        part = parts.setdefault(row.get("part"), [0, row["rows_in_batch"], row.get("part_prompts", 0)])
        part[0] += 1
    if any(seen != made for seen, made, _ in parts.values()):
        return False
    return sum(prompts for *_, prompts in parts.values()) >= rows[0].get("step_prompts", 0)


class StepAssembler:
    """Collects rollout rows per step and hands each step over once it is whole."""

    def __init__(self):
        self.pending: dict[int, list[dict]] = {}

    def add(self, rows: list[dict]) -> list[tuple[int, list[dict]]]:
        for row in rows:
            self.pending.setdefault(row["batch_index"], []).append(row)
        whole = [step for step in sorted(self.pending) if step_is_whole(self.pending[step])]
        return [(step, self.pending.pop(step)) for step in whole]


class _Feeder(threading.Thread):
    """Moves finished steps from the rollout stream into the buffer, in order."""

    def __init__(self, make_stream: Callable, buffer, on_step: Callable, algorithm: Algorithm,
                 output_dir: Path | None = None):
        super().__init__(daemon=True, name="raylign-feeder")
        self.make_stream, self.buffer, self.on_step = make_stream, buffer, on_step
        self.algorithm, self.output_dir = algorithm, output_dir
        self.error: BaseException | None = None

    def run(self):
        try:
            steps = StepAssembler()
            for rows in self.make_stream():
                for step, batch in steps.add(rows):
                    # Batch-level selection (whitening, top fraction, pools, pairs) sees the whole
                    # step before it is dealt to ranks.
                    units, selected = self.algorithm.select(batch, step)
                    if self.output_dir is not None:  # before the trainer can checkpoint step + 1
                        save_algorithm_state(self.output_dir, step + 1, self.algorithm)
                    ray.get(self.buffer.put.remote(step, units, selected))
                    self.on_step(step, {**_rollout_stats(batch), "units": len(units)}, _best_examples(batch))
        except BaseException as err:  # surfaced by the driver after fit() returns
            self.error = err
            log.exception("rollout stream failed")
            ray.get(self.buffer.close.remote())


def _set_aside_previous_run(output_dir: Path) -> None:
    """A fresh run never mixes its metrics with an old one's, and never deletes it either."""
    if output_dir.is_dir() and any(output_dir.iterdir()):
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(output_dir.stat().st_mtime))
        target = output_dir.with_name(f"{output_dir.name}-{stamp}")
        output_dir.rename(target)
        log.warning("previous run in %s moved to %s (use engine.resume=true to continue a run)", output_dir, target)
        print(f"[raylign] previous run moved to {target}", flush=True)


def check_resume(config: EngineConfig) -> dict | None:
    """The checkpoint a resumed run (`engine.resume=true`) continues from, None for a new run; a
    ConfigError naming the setting when the checkpoint is missing or does not fit the recipe."""
    if not config.resume:
        return None
    output_dir = Path(config.output_dir).resolve()
    resume = read_resume_state(output_dir)
    if resume is None:
        raise ConfigError(f"engine.resume=true but {output_dir} holds no resumable checkpoint "
                          "(latest/raylign_state.json; runs save one every engine.trainer.save_every steps): "
                          "set engine.resume=false to start a new run")
    saved_per_step = resume.get("data_position", {}).get("prompts_per_step")
    if saved_per_step and saved_per_step != config.prompts_per_step:
        raise ConfigError(
            f"engine.prompts_per_step={config.prompts_per_step} but the checkpoint in {output_dir / 'latest'} "
            f"was taken at {saved_per_step} prompts a step: steps would no longer be the same prompts; "
            f"resume with engine.prompts_per_step={saved_per_step}"
        )
    if resume["step"] >= config.num_iterations:
        raise ConfigError(f"engine.num_iterations={config.num_iterations} but {output_dir} already holds step "
                          f"{resume['step']}: raise engine.num_iterations to train further, or use a new output_dir")
    return resume


def run_engine(
    config: EngineConfig,
    model_path: str,
    prompts: list[dict] | PromptCorpus,
    sampling: SamplingConfig,
    reward: RewardSource,
    algorithm: Algorithm,
    run_name: str,
    samplers: list | None = None,
    reference=None,
) -> dict:
    """Run the loop; returns paths of the outputs and the last metrics.

    Pass `samplers` to keep them after the run (the caller owns them); otherwise the
    loop starts its own and stops them at the end. `prompts` is a list of prompt rows or a
    `PromptCorpus` (a file read by Ray Data as the run goes, never loaded by the driver).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    output_dir = Path(config.output_dir).resolve()
    resume = check_resume(config)
    if not config.resume:
        _set_aside_previous_run(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    first_step = resume["step"] if resume else 0
    start_weights = str(output_dir / "latest") if resume else model_path
    prompt_server = start_step_server(prompts, config.prompts_per_step)
    try:  # read up to the first step now: an empty split fails before the samplers start
        fetch_steps(prompt_server, first_step)
    except BaseException:
        ray.kill(prompt_server)
        raise
    owns_samplers = samplers is None
    if owns_samplers:
        sampling = restartable_sampling(sampling, config.weight_sync)
        samplers = create_samplers(start_weights, sampling,
                                   initial_version=resume.get("policy_version", first_step) if resume else 0)
    buffer = RolloutBuffer.remote()
    settings = SampleSettings(samplers, sampling.num_samples, config.max_staleness, config.staleness_timeout_s, buffer,
                              sampling.max_retries_per_step)
    stream = _stream_factory(config, prompt_server, first_step, settings, reward, algorithm, reference)

    if resume:  # steps after the checkpoint run again: their old rows must not stay beside the new ones
        drop_metrics_after(output_dir / "metrics.jsonl", first_step)
        load_algorithm_state(output_dir, first_step, algorithm)  # e.g. Quark's pool as of that step
    logger = MetricsLogger(output_dir, run_name)
    bar = progress(config.num_iterations - first_step, f"{run_name} iterations")
    rollout_stats: dict[int, dict] = {}
    last: dict = {}
    examples: list[dict] = []
    lock = threading.Lock()  # the feeder thread and the driver both flush
    # the last step in metrics.jsonl (0 for a fresh run, its folder set aside; at most the
    # checkpoint's step on resume, rows after it dropped above): one short of the checkpoint's
    # step when the run stopped before logging it, and the trainer's resent row fills it in
    logged = [last_logged_step(output_dir / "metrics.jsonl")]

    def flush_reports():
        with lock:
            for report in ray.get(buffer.pop_reports.remote()):
                step = report.pop("step")
                if report.pop("resent", False) and step + 1 <= logged[0]:
                    continue  # a checkpoint's copy of a row already logged
                if step + 1 <= logged[0]:  # a restarted worker group retrained it: replace the row
                    logger.drop_after(step)
                    bar.update(step - logged[0])
                logged[0] = step + 1
                merged = {**rollout_stats.get(step, {}), **report}
                logger.log(step + 1, merged)
                last.update(merged)
                if step >= first_step:  # a resent row of the checkpoint's step is not new progress
                    bar.update(1)

    def on_step(step: int, stats: dict, best: list[dict]):
        rollout_stats[step] = stats
        examples[:] = best
        flush_reports()

    feeder = _Feeder(stream, buffer, on_step, algorithm, output_dir)
    trainer = TorchTrainer(
        policy_train_loop,
        train_loop_config={
            "trainer": config.trainer,
            "weight_sync": wire_dtype_for(sampling, config.weight_sync),
            "model_path": model_path,
            "output_dir": str(output_dir),
            "num_iterations": config.num_iterations,
            "prompts_per_step": config.prompts_per_step,
            "buffer": buffer,
            "samplers": samplers,
            "algorithm": algorithm,
        },
        scaling_config=ScalingConfig(
            num_workers=config.trainer.num_workers,
            use_gpu=config.trainer.use_gpu,
            resources_per_worker={"CPU": config.trainer.cpus_per_worker},
        ),
        run_config=RunConfig(name=run_name, storage_path=str(output_dir / "ray_train"),
                             failure_config=FailureConfig(max_failures=config.trainer.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=config.trainer.keep_checkpoints)),
    )
    feeder.start()
    try:
        trainer.fit()
        versions = ray.get([s.policy_version.remote() for s in samplers])
    finally:
        ray.get(buffer.close.remote())
        feeder.join(timeout=30)
        flush_reports()
        bar.close()
        plot = logger.plot()
        logger.close()
        if owns_samplers:
            samplers.shutdown()
        ray.kill(prompt_server)
    if feeder.error is not None:
        raise feeder.error
    if algorithm.generation_prefix():
        save_prompt_prefix(output_dir / "final", algorithm.generation_prefix())
    return {
        "output_dir": str(output_dir),
        "checkpoint": str(output_dir / "final"),
        "metrics": str(output_dir / "metrics.jsonl"),
        "plot": str(plot) if plot else None,
        "sampler_versions": versions,
        "last": last,
        "examples": examples,
    }


def prompt_step_datasets(prompt_server, first_step: int, last_step: int):
    """The stream's input: Ray Data datasets of prompt rows, one block per step, fetched from
    the step server as the stream goes. One dataset per `STEPS_PER_STREAM` steps, so what
    the driver holds for the stream does not grow with the run."""
    for start in range(first_step, last_step, STEPS_PER_STREAM):
        steps = range(start, min(start + STEPS_PER_STREAM, last_step))
        # One step number per block, and the fetch turns it into one block of that step's rows:
        # the sample stage must get one step per call (a later step waits for this one's training).
        ds = ray.data.from_items([{"step": step} for step in steps], override_num_blocks=len(steps))
        # A CPU request of its own keeps it from fusing with sampling, so it fetches a few steps ahead.
        yield ds.map_batches(step_rows_stage, batch_format="pyarrow", batch_size=None,
                             fn_kwargs={"server": prompt_server}, num_cpus=0.005,
                             compute=ray.data.TaskPoolStrategy(size=1))


def _stream_factory(config: EngineConfig, prompt_server, first_step: int, settings: SampleSettings, reward,
                    algorithm: Algorithm, reference=None):
    """A function returning an iterator of row lists, one element per finished chunk."""

    def sequential():
        one_at_a_time = replace(settings, max_staleness=0)
        for step in range(first_step, config.num_iterations):
            batch = [algorithm.prepare_prompt(row) for row in fetch_steps(prompt_server, step)]
            yield score_batch(sample_batch(batch, one_at_a_time), reward, reference)

    def streaming():
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.issue_detectors_config.detectors = []  # rollout rows are small; its memory hints are noise here
        for ds in prompt_step_datasets(prompt_server, first_step, config.num_iterations):
            yield from rollouts(ds)

    def rollouts(ds):
        if type(algorithm).prepare_prompt is not Algorithm.prepare_prompt:
            # per-row prompt stage (Quark's control token, RRHF's dataset answers); a token CPU, like the
            # stages below: a whole CPU here would not fit beside the roles on a small machine
            ds = ds.map(algorithm.prepare_prompt, num_cpus=0.01)
        ds = ds.map_batches(
            sample_stage,
            batch_format="pyarrow",
            batch_size=None,
            fn_kwargs={"settings": settings},
            num_cpus=0.01,
            compute=ray.data.TaskPoolStrategy(size=1),
        )
        # A different CPU request keeps Ray Data from fusing the two stages into one task,
        # so scoring step i overlaps sampling step i+1.
        ds = ds.map_batches(
            score_stage,
            batch_format="pyarrow",
            batch_size=None,
            fn_kwargs={"reward": reward, "reference": reference},
            num_cpus=0.02,
            compute=ray.data.TaskPoolStrategy(size=1),
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            yield batch.to_pylist()

    return sequential if config.pipeline == "sequential" else streaming
