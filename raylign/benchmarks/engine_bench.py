"""`raylign bench engine`: where the engine's time goes, measured side by side in one run.

1. sampling: raw vLLM engine tokens/s vs the same prompts through 1 and N sampler actors;
2. iteration time: streaming overlap (max_staleness=1) vs stages one after another;
3. weight-sync seconds as a share of iteration time.

Ratios within one run are what to compare: these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from raylign.data.adapters import load_rows
from raylign.data.bundled import BUNDLED_HH


def _tokens(rollouts: list[dict]) -> int:
    return sum(len(r["response_token_ids"]) for r in rollouts)


def bench_sampling(model_path: str, prompts: list[dict], sampling, repeats: int) -> list[tuple]:
    import gc

    from raylign.engine.stages import SampleSettings, sample_batch
    from raylign.models.chat import as_messages, encode_prompt
    from raylign.sampling.actor import create_samplers, make_sampler

    rows = [{**p, "batch_index": 0} for p in prompts]
    results = []
    raw = make_sampler(model_path, sampling)
    ids = [encode_prompt(raw.tokenizer, as_messages(p), sampling.max_prompt_tokens) for p in prompts]
    raw.generate(ids)  # warm-up with the measured batch shape
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = raw.generate(ids)
        timings.append((sum(len(s.token_ids) for group in out for s in group), time.perf_counter() - start))
    results.append(("raw vLLM engine (driver process)", *_rate(timings)))
    del raw
    gc.collect()
    for count in sorted({1, sampling.num_samplers}):
        actors = create_samplers(model_path, sampling, count=count)
        settings = SampleSettings(actors, sampling.num_samples)
        sample_batch(rows, settings)  # warm-up with the measured batch shape
        timings = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = sample_batch(rows, settings)
            timings.append((_tokens(out), time.perf_counter() - start))
        results.append((f"{count} sampler actor(s) via Ray", *_rate(timings)))
        actors.shutdown()
    return results


def _rate(timings: list[tuple[int, float]]) -> tuple[float, float]:
    tokens = sum(t for t, _ in timings)
    seconds = sum(s for _, s in timings)
    return tokens / seconds, seconds / len(timings)


def bench_iterations(model_path, prompts, sampling, engine, reward, out_dir: Path) -> list[dict]:
    from raylign.algorithms.rrhf import RRHFAlgorithm, RRHFConfig
    from raylign.engine.loop import run_engine

    rows = []
    for mode, staleness in (("sequential", 0), ("streaming", 1)):
        config = engine.model_copy(
            update={"pipeline": mode, "max_staleness": staleness, "output_dir": str(out_dir / mode), "resume": False}
        )
        start = time.perf_counter()
        result = run_engine(config, model_path, prompts, sampling, reward,
                            RRHFAlgorithm(RRHFConfig(), engine.trainer.max_length, dataset_responses=True), f"bench-{mode}")
        wall = time.perf_counter() - start
        metrics = [json.loads(line) for line in open(result["metrics"])]
        steady = metrics[1:] or metrics  # the first step includes start-up
        iteration = statistics.fmean(m["iteration_seconds"] for m in steady)
        sync = statistics.fmean(m["sync_seconds"] for m in steady)
        rows.append(
            {
                "mode": f"{mode} (max_staleness={staleness})",
                "iteration_s": iteration,
                "sample_s": statistics.fmean(m["sample_seconds"] for m in steady),
                "score_s": statistics.fmean(m["score_seconds"] for m in steady),
                "train_s": statistics.fmean(m["train_seconds"] for m in steady),
                "sync_s": sync,
                "sync_share": sync / iteration,
                "wall_s": wall,
            }
        )
    return rows


def print_tables(sampling_rows, iteration_rows) -> str:
    lines = ["", "Sampling throughput (same prompts, k samples each)", f"{'path':<36}{'tokens/s':>10}{'s/batch':>10}{'ratio':>8}"]
    base = sampling_rows[0][1]
    for name, rate, seconds in sampling_rows:
        lines.append(f"{name:<36}{rate:>10.1f}{seconds:>10.2f}{rate / base:>8.2f}")
    if not iteration_rows:
        text = "\n".join(lines)
        print(text)
        return text
    lines += ["", "Iteration time (steady state, excludes step 1)",
              f"{'mode':<32}{'iter s':>8}{'sample':>8}{'score':>8}{'train':>8}{'sync':>8}{'sync %':>8}"]
    for r in iteration_rows:
        lines.append(
            f"{r['mode']:<32}{r['iteration_s']:>8.2f}{r['sample_s']:>8.2f}{r['score_s']:>8.2f}"
            f"{r['train_s']:>8.2f}{r['sync_s']:>8.2f}{100 * r['sync_share']:>7.1f}%"
        )
    if len(iteration_rows) == 2:
        lines.append(f"streaming speed-up: {iteration_rows[0]['iteration_s'] / iteration_rows[1]['iteration_s']:.2f}x")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv: list[str]) -> int:
    from raylign.engine.config import EngineConfig, TrainerConfig
    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray
    from raylign.sampling.base import SamplingConfig
    from raylign.scoring.base import RewardConfig
    from raylign.scoring.sources import make_reward_source

    parser = argparse.ArgumentParser(prog="raylign bench engine", description=__doc__)
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per sampling batch / 4 per training step")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", "--out", default="runs/bench_engine")
    parser.add_argument("--skip-sampling", action="store_true")
    parser.add_argument("--skip-iterations", action="store_true")
    parser.add_argument("--reward", default="hh-rm-smollm2",
                        help="reward model for the iteration runs (as in jobs/rrhf_hh.yaml), or 'rule' for a rule-based reward")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-test size: 2 prompts x 2 samples, 8 new tokens, 2 iterations, rule reward")
    args = parser.parse_args(argv)
    if args.quick:
        args.prompts, args.samples, args.max_new_tokens, args.iterations, args.repeats, args.reward = 2, 2, 8, 2, 1, "rule"

    model_path = str(resolve_model(args.model))
    prompts = load_rows(BUNDLED_HH, "preference", on_error="skip", limit=64)
    init_ray()
    sampling = SamplingConfig(num_samples=args.samples, max_new_tokens=args.max_new_tokens, num_samplers=2, max_prompt_tokens=256)
    sampling_rows = [] if args.skip_sampling else bench_sampling(model_path, prompts[: args.prompts], sampling, args.repeats)
    engine = EngineConfig(
        num_iterations=args.iterations,
        prompts_per_step=2,
        trainer=TrainerConfig(num_workers=1, cpus_per_worker=1.0, trainable="top_layers", top_layers=4, max_length=320,
                              optim={"lr": 2e-6, "schedule": "constant", "warmup_ratio": 0.0}),
    )
    if args.reward == "rule":
        reward_config = RewardConfig(kind="function", function="raylign.scoring.rule_rewards:concise")
    else:
        reward_config = RewardConfig(kind="actor", model=args.reward, max_length=320, batch_size=12, num_cpus=0.2)
    out_dir = Path(args.output)
    iteration_rows = []
    if not args.skip_iterations:
        reward = make_reward_source(reward_config)
        iteration_rows = bench_iterations(model_path, prompts, sampling, engine, reward, out_dir)
        reward.close()
    text = print_tables(sampling_rows or [("(skipped)", 1.0, 0.0)], iteration_rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.txt").write_text(text + "\n")
    setup = {k: getattr(args, k) for k in ("model", "prompts", "samples", "max_new_tokens", "iterations", "repeats",
                                           "reward", "quick")}
    (out_dir / "results.json").write_text(json.dumps({"setup": setup, "sampling": sampling_rows,
                                                      "iterations": iteration_rows}, indent=2))
    return 0
