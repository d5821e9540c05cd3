"""`raylign bench loop`: seconds per online GRPO iteration, raylign vs TRL's `GRPOTrainer`.

Both sides get one set of settings, derived from the raylign recipe (jobs/grpo_hh.yaml by
default): the default model, the same HH train-split prompts in the same order, k samples
per prompt, max new tokens, temperature/top-p, the same reward model scored by the same
code (raylign's `RewardScorer`, a TRL reward function on that side), the same trainable
top layers, learning rate, KL coefficient, clip range, loss aggregation, micro-batch and
update size (one optimizer step per rollout batch), float32 training and the same torch
thread count. Only prompts that fit `max_prompt_tokens` whole and that both sides tokenise
alike are used, so neither truncates. Runs, one after the other in this process tree:
raylign sequential (on-policy), raylign streaming (max_staleness=1), then TRL in a child
process with transformers generate and, with `--trl hf,vllm`, with vLLM colocate.

    raylign bench loop [--iterations 4] [--warmup 1] [--threads 2] [--quick] [--trl hf,vllm] [key.sub=value ...]

On a machine other jobs load, use --threads 1: a 2-thread torch op waits on a thread the OS
has descheduled (measured 5x slower than 1 thread there), which swamps what is compared.

Prints s/iteration (median over the timed iterations) with the speed-up over TRL and the
per-stage seconds; writes runs/bench/loop.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raylign.scoring.sources import ActorRewardSource

QUICK = ["engine.prompts_per_step=2", "sampling.num_samples=2", "sampling.max_new_tokens=8",
         "engine.trainer.micro_batch_size=2"]
TRL_VARIANTS = {"hf": "TRL GRPOTrainer (transformers generate)", "vllm": "TRL GRPOTrainer (vLLM colocate)"}


# ---- settings: one raylign recipe, and the TRL arguments that match it ----------------------

def load_job(recipe: str, overrides: list[str], threads: int):
    from raylign.config import load_config
    from raylign.launch.recipes import recipe_class

    # no mid-run checkpoints: TRL saves none either (save_strategy="no")
    return load_config(recipe_class("grpo"), recipe, [*overrides, f"engine.trainer.torch_threads={threads}",
                                               "engine.trainer.save_every=0"])


def update_shape(job) -> dict[str, int]:
    """Rollouts per iteration and how raylign turns them into optimizer steps."""
    from raylign.algorithms.grpo import GRPOAlgorithm
    from raylign.engine.policy_trainer import update_plan

    epochs, minibatches, micro = update_plan(job.engine.trainer, GRPOAlgorithm.from_recipe(job))
    rollouts = job.engine.prompts_per_step * job.sampling.num_samples
    if rollouts % (minibatches * micro):
        raise ValueError(f"{rollouts} rollouts per step do not split into {minibatches} minibatch(es) of whole "
                         f"micro-batches of {micro}: TRL needs equal micro-batches (change engine.prompts_per_step, "
                         "sampling.num_samples or engine.trainer.micro_batch_size)")
    return {"rollouts": rollouts, "epochs": epochs, "minibatches": minibatches, "micro_batch": micro,
            "optimizer_steps": epochs * minibatches}


def trl_grpo_kwargs(job, use_vllm: bool = False) -> dict:
    """`trl.GRPOConfig` keyword arguments for the same update as the raylign recipe."""
    grpo, sampling, trainer = job.grpo, job.sampling, job.engine.trainer
    if grpo.estimator not in ("grpo", "dr_grpo"):
        raise ValueError(f"grpo.estimator={grpo.estimator}: TRL's GRPOTrainer has no such estimator (grpo, dr_grpo)")
    if sampling.prompt_mode != "chat" or sampling.num_samples < 2:
        raise ValueError("the loop bench needs chat prompts and sampling.num_samples >= 2 (GRPO groups)")
    if sampling.max_prompt_tokens + sampling.max_new_tokens > trainer.max_length:
        raise ValueError(f"max_prompt_tokens + max_new_tokens = {sampling.max_prompt_tokens + sampling.max_new_tokens} "
                         f"> engine.trainer.max_length={trainer.max_length}: raylign would cut rollouts, TRL would not")
    shape = update_shape(job)
    kwargs = {
        # rollout batch: one generation of prompts_per_step x k completions per iteration
        "num_generations": sampling.num_samples, "steps_per_generation": shape["rollouts"] // shape["micro_batch"],
        "per_device_train_batch_size": shape["micro_batch"],
        "gradient_accumulation_steps": shape["rollouts"] // (shape["minibatches"] * shape["micro_batch"]),
        "num_iterations": shape["epochs"], "max_steps": job.engine.num_iterations * shape["optimizer_steps"],
        "max_completion_length": sampling.max_new_tokens, "temperature": sampling.temperature, "top_p": sampling.top_p,
        "top_k": 0, "shuffle_dataset": False,
        # objective
        "beta": grpo.kl_coef, "epsilon": grpo.cliprange,
        "scale_rewards": "group" if grpo.estimator == "grpo" else "none",
        "loss_type": "dapo" if grpo.loss_agg == "token" else "grpo",  # token-sum / #tokens; per-sequence mean
        # optimizer
        "learning_rate": trainer.optim.lr, "weight_decay": trainer.optim.weight_decay,
        "max_grad_norm": trainer.optim.max_grad_norm, "lr_scheduler_type": trainer.optim.schedule,
        "warmup_steps": int(trainer.optim.warmup_ratio * job.engine.num_iterations * shape["optimizer_steps"]),
        "bf16": False, "use_cpu": True, "seed": trainer.seed,
        # quiet: no checkpoints, trackers or progress bars inside the timed loop
        "report_to": "none", "save_strategy": "no", "logging_steps": 10_000, "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }
    if use_vllm:
        kwargs.update({"use_vllm": True, "vllm_mode": "colocate", "vllm_max_model_length": sampling.vllm_max_model_len,
                       "vllm_importance_sampling_correction": False})
    return kwargs


def select_prompts(job, model_path: str, count: int) -> list[dict]:
    """The first `count` recipe prompts that fit max_prompt_tokens whole and that raylign's
    encoder and TRL's chat-template call turn into the same ids."""
    from raylign.data.prompt_corpus import load_prompts
    from raylign.models.chat import as_messages, encode_prompt, load_tokenizer

    tokenizer = load_tokenizer(model_path)
    chosen = []
    for row in load_prompts(job.data):
        messages = as_messages(row)
        ids = encode_prompt(tokenizer, messages, 10**9)
        theirs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        if len(ids) <= job.sampling.max_prompt_tokens and list(ids) == list(theirs["input_ids"]):
            chosen.append(row)
            if len(chosen) == count:
                return chosen
    raise SystemExit(f"only {len(chosen)} prompts fit sampling.max_prompt_tokens={job.sampling.max_prompt_tokens}; "
                     f"need {count} (fewer iterations or prompts per step, or a longer prompt budget)")


# ---- raylign: the recipe's roles, with the reward and reference actors timing their calls ---

def _timed_worker(base: type, method: str) -> type:
    """`base` whose `method` records its own compute seconds per call (one call per step)."""

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return getattr(base, method)(self, *args, **kwargs)
        finally:
            self.__dict__.setdefault("_call_seconds", []).append(time.perf_counter() - start)

    def call_seconds(self) -> list[float]:
        return self.__dict__.get("_call_seconds", [])

    return type(f"Timed{base.__name__}", (base,), {method: timed, "call_seconds": call_seconds})


class TimedActorRewardSource(ActorRewardSource):
    """The `actor` reward source with an actor that times each scoring call."""

    def __init__(self, config):
        import ray

        from raylign.scoring.actor import RewardModelWorker

        threads = max(1, round(config.num_cpus)) if config.num_cpus >= 1 else 1
        self.config = config
        actor = ray.remote(_timed_worker(RewardModelWorker, "score_rows"))
        self.actor = actor.options(num_cpus=config.num_cpus, num_gpus=config.num_gpus,
                                   max_restarts=config.max_restarts).remote(config.model, config.max_length,
                                                                            config.batch_size, threads)


def run_raylign(job, model_path: str, prompts: list[dict], pipeline: str, output_dir: Path) -> dict:
    import ray

    from raylign.algorithms.grpo import GRPOAlgorithm
    from raylign.engine.loop import run_engine
    from raylign.metrics import read_metrics
    from raylign.scoring.reference import ReferenceWorker

    engine = job.engine.model_copy(update={"pipeline": pipeline, "max_staleness": 1 if pipeline == "streaming" else 0,
                                           "output_dir": str(output_dir / pipeline), "resume": False})
    algorithm = GRPOAlgorithm.from_recipe(job)
    model_path = algorithm.prepare_model(model_path, engine.output_dir)
    start = time.perf_counter()
    reward = TimedActorRewardSource(job.reward)
    reference = None
    if algorithm.needs_reference:
        ref = job.reference
        reference = ray.remote(_timed_worker(ReferenceWorker, "response_logprobs")).options(
            num_cpus=ref.num_cpus, num_gpus=ref.num_gpus, max_restarts=ref.max_restarts
        ).remote(ref.model or model_path, engine.trainer.max_length, ref.batch_size)
    try:
        result = run_engine(engine, model_path, prompts, job.sampling, reward, algorithm, f"bench-loop-{pipeline}",
                            reference=reference)
        reward_calls = ray.get(reward.actor.call_seconds.remote())
        reference_calls = ray.get(reference.call_seconds.remote()) if reference is not None else []
    finally:
        reward.close()
        if reference is not None:
            ray.kill(reference)
    rows = [r for r in read_metrics(result["metrics"]) if "iteration_seconds" in r]
    return {"metrics": rows, "reward_calls": reward_calls, "reference_calls": reference_calls,
            "wall_s": time.perf_counter() - start}


# ---- summaries (pure) ---------------------------------------------------------------------

def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def raylign_summary(rows: list[dict], reward_calls: list[float], reference_calls: list[float], warmup: int) -> dict:
    """s/iteration (median and mean) and mean stage seconds over the steps after `warmup`.

    score = wall time of the scoring stage (reward and reference run concurrently in it);
    reward / reference = the actors' own compute per call; wait = what the trainer spent
    waiting for rollouts (iteration - train - sync), the rollout time not hidden by streaming.
    """
    timed = rows[warmup:]
    if not timed:
        raise ValueError(f"no timed iterations: {len(rows)} logged, {warmup} warm-up")
    iterations = [r["iteration_seconds"] for r in timed]
    stages = {"sample": _mean([r["sample_seconds"] for r in timed]),
              "score": _mean([r["score_seconds"] for r in timed]),
              "reward": _mean(reward_calls[warmup:len(rows)]),
              "reference": _mean(reference_calls[warmup:len(rows)]),
              "train": _mean([r["train_seconds"] for r in timed]),
              "sync": _mean([r.get("sync_seconds", 0.0) for r in timed])}
    stages["wait"] = _mean([r["iteration_seconds"] - r["train_seconds"] - r.get("sync_seconds", 0.0) for r in timed])
    return {"s_per_iteration": statistics.median(iterations), "mean_s_per_iteration": _mean(iterations),
            "iterations": iterations, "stages": stages}


def trl_summary(stamps: list[float], stages_by_step: dict[str, dict[str, float]], steps_per_iteration: int,
                warmup: int) -> dict:
    """The same numbers for TRL: iteration i ends at optimizer step (i+1) * steps_per_iteration;
    stages from its profiling blocks (generate, the reward function, weight sync) and
    prepare = the rest of its rollout preparation (reference log-probs, tokenising)."""
    ends = stamps[::steps_per_iteration]  # stamps[0] is the start of training
    iterations = [b - a for a, b in zip(ends, ends[1:])]
    per_iteration = []
    for i in range(len(iterations)):
        summed: dict[str, float] = {}
        for step in range(i * steps_per_iteration, (i + 1) * steps_per_iteration):
            for name, seconds in stages_by_step.get(str(step), {}).items():
                summed[name] = summed.get(name, 0.0) + seconds
        generate = sum(v for k, v in summed.items() if k.endswith("generate") or k.endswith("generate_batch"))
        rollout = summed.get("_prepare_inputs", 0.0)
        stages = {"generate": generate, "reward": summed.get("reward_model", 0.0)}
        if "sync_weights" in summed:  # vLLM only: transformers generate runs on the trained weights
            stages["sync"] = summed["sync_weights"]
        stages["prepare"] = rollout - sum(stages.values())
        stages["train"] = iterations[i] - rollout
        per_iteration.append(stages)
    timed, timed_stages = iterations[warmup:], per_iteration[warmup:]
    if not timed:
        raise ValueError(f"no timed iterations: {len(iterations)} run, {warmup} warm-up")
    stages = {name: _mean([s.get(name, 0.0) for s in timed_stages]) for name in timed_stages[0]}
    return {"s_per_iteration": statistics.median(timed), "mean_s_per_iteration": _mean(timed), "iterations": timed,
            "stages": stages}


def speedups(results: list[dict]) -> None:
    """Adds `speedup_vs_trl_<variant>` = TRL s/iter / this row's s/iter to every row, and
    `speedup_vs_trl` against the first TRL run that finished (transformers generate)."""
    baselines = [r for r in results if r["trainer"] == "trl" and "s_per_iteration" in r]
    for baseline in baselines:
        for row in results:
            if "s_per_iteration" in row:
                row[f"speedup_vs_trl_{baseline['variant']}"] = baseline["s_per_iteration"] / row["s_per_iteration"]
    for row in results:
        if baselines and row["trainer"] == "raylign" and "s_per_iteration" in row:
            row["speedup_vs_trl"] = row[f"speedup_vs_trl_{baselines[0]['variant']}"]


def format_table(results: list[dict]) -> str:
    baselines = [r["variant"] for r in results if r["trainer"] == "trl" and "s_per_iteration" in r]
    head = f"{'run':<44}{'s/iter':>8}{'mean':>8}" + "".join(f"{'vs TRL-' + b:>12}" for b in baselines)
    lines = [head]
    for row in results:
        if "s_per_iteration" not in row:
            lines.append(f"{row['name']:<44}  failed: {row.get('error', '?')[:120]}")
            continue
        lines.append(f"{row['name']:<44}{row['s_per_iteration']:>8.2f}{row['mean_s_per_iteration']:>8.2f}"
                     + "".join(f"{row[f'speedup_vs_trl_{b}']:>11.2f}x" for b in baselines))
    lines += ["", "stage seconds per iteration (share of the mean iteration):"]
    for row in results:
        if "stages" in row:
            parts = [f"{k} {v:.2f} ({100 * v / row['mean_s_per_iteration']:.0f}%)"
                     for k, v in row["stages"].items() if v == v]
            lines.append(f"  {row['name']}: " + ", ".join(parts))
    return "\n".join(lines)


# ---- the TRL child process and the command ------------------------------------------------

def run_trl(job, model_path: str, prompts: list[dict], variant: str, threads: int, warmup: int, out: Path) -> dict:
    from raylign.models.chat import as_messages

    shape = update_shape(job)
    spec = {"trl": trl_grpo_kwargs(job, use_vllm=variant == "vllm"), "model_path": model_path, "threads": threads,
            "top_layers": job.engine.trainer.top_layers if job.engine.trainer.trainable == "top_layers" else None,
            "reward_model": job.reward.model,
            "reward_max_length": job.reward.max_length, "reward_batch_size": job.reward.batch_size,
            "prompts": [as_messages(p) for p in prompts]}
    spec_path, result_path = out / f"trl_{variant}_spec.json", out / f"trl_{variant}_result.json"
    spec_path.write_text(json.dumps(spec))
    result_path.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "raylign.benchmarks.loop_bench_trl", str(spec_path), str(result_path)],
                          capture_output=True, text=True)
    if done.returncode != 0 or not result_path.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {tail[0]}", "log_tail": (done.stderr or "")[-4000:]}
    raw = json.loads(result_path.read_text())
    return {**trl_summary(raw["step_stamps"], raw["stages"], shape["optimizer_steps"], warmup),
            "wall_s": raw["wall_s"]}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raylign bench loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="jobs/grpo_hh.yaml", help="the raylign GRPO recipe both sides follow")
    parser.add_argument("--iterations", type=int, help="timed iterations per run (default 4; --quick 2)")
    parser.add_argument("--warmup", type=int, help="untimed iterations first (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads: raylign's trainer, TRL's process")
    parser.add_argument("--pipelines", help="raylign pipelines to run (default sequential,streaming; --quick streaming)")
    parser.add_argument("--trl", default="hf", help="TRL generation backends to run: hf, vllm (comma list) or none")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2 prompts x 2 samples, 8 new tokens, 1 + 2 iterations, streaming and TRL")
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("overrides", nargs="*", help="recipe overrides, e.g. sampling.max_new_tokens=32")
    args = parser.parse_args(argv)
    args.iterations = args.iterations or (2 if args.quick else 4)
    args.warmup = 1 if args.warmup is None else args.warmup
    args.pipelines = args.pipelines if args.pipelines is not None else ("streaming" if args.quick else
                                                                         "sequential,streaming")
    if args.iterations < 1 or args.warmup < 0:
        parser.error("--iterations must be >= 1 and --warmup >= 0")

    import ray

    from raylign.models.registry import resolve_model
    from raylign.preflight import check_reward
    from raylign.runtime import init_ray

    overrides = (QUICK if args.quick else []) + args.overrides
    overrides.append(f"engine.num_iterations={args.warmup + args.iterations}")
    job = load_job(args.recipe, overrides, args.threads)
    variants = [v for v in args.trl.split(",") if v and v != "none"]
    unknown = set(variants) - set(TRL_VARIANTS)
    if unknown:
        parser.error(f"--trl: unknown {sorted(unknown)} (hf, vllm, none)")
    trl_kwargs = trl_grpo_kwargs(job)  # fails early on settings TRL cannot match
    model_path = str(resolve_model(job.model))
    check_reward(job.reward)
    prompts = select_prompts(job, model_path, job.engine.prompts_per_step * job.engine.num_iterations)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    pipelines = [p for p in args.pipelines.split(",") if p]
    if set(pipelines) - {"sequential", "streaming"}:
        parser.error(f"--pipelines: sequential, streaming (got {args.pipelines})")
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as scratch:
        if pipelines:
            init_ray(None, num_cpus=max(2, args.threads), dashboard=False, quiet=True)
        try:
            for pipeline in pipelines:
                name = f"raylign GRPO {pipeline} (max_staleness={1 if pipeline == 'streaming' else 0})"
                print(f"[bench loop] {name} ...", flush=True)
                run = run_raylign(job, model_path, prompts, pipeline, Path(scratch))
                results.append({"trainer": "raylign", "variant": pipeline, "name": name, "wall_s": run["wall_s"],
                                **raylign_summary(run["metrics"], run["reward_calls"], run["reference_calls"],
                                                  args.warmup)})
        finally:
            if ray.is_initialized():
                ray.shutdown()  # TRL runs next, alone on the machine
        for variant in variants:
            print(f"[bench loop] {TRL_VARIANTS[variant]} ...", flush=True)
            results.append({"trainer": "trl", "variant": variant, "name": TRL_VARIANTS[variant],
                            **run_trl(job, model_path, prompts, variant, args.threads, args.warmup, Path(scratch))})
    speedups(results)
    setup = {"recipe": args.recipe, "overrides": overrides, "warmup": args.warmup, "iterations": args.iterations,
             "threads": args.threads, "model": job.model, "reward_model": job.reward.model,
             "prompts_per_step": job.engine.prompts_per_step, "samples": job.sampling.num_samples,
             "max_new_tokens": job.sampling.max_new_tokens, "update": update_shape(job), "trl_config": trl_kwargs}
    text = format_table(results)
    print("\n" + text)
    (out / "loop.json").write_text(json.dumps({"setup": setup, "results": results}, indent=2))
    print(f"\nresults in {out / 'loop.json'}")
    return 0
