"""`raylign eval compare`: did a method align the policy? One table for several policies.

For each policy (the starting one first) on the same held-out prompts (a split no policy
trained on): responses from sampler actors; their mean reward under the reward model the
methods optimised; the reference model's perplexity of them (fluency, and a reward-hack
alarm); and the win rate against the starting policy under a *second* judge the policies
were not trained against (so refusing everything or forging chat turns shows up there).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from raylign.config import StrictModel
from raylign.smoke import BUNDLED_PROMPTS


class CompareConfig(StrictModel):
    data: str = str(BUNDLED_PROMPTS)
    split: str = "test"
    limit: int = 64
    max_new_tokens: int = 48
    temperature: float = 0.0  # greedy: the comparison does not depend on sampling luck
    backend: str = "vllm"
    reward_model: str = "hh-rm-smollm2"
    # the second judge, as an annotator spec of `raylign annotate` (rm:NAME, judge:MODEL, http:URL#MODEL)
    judge: str = "judge:SmolLM2-135M-Instruct"
    reference: str = "SmolLM2-135M-Instruct"
    max_length: int = 320


def generate(policy_path: str, prompts: list[dict], config: CompareConfig) -> list[dict]:
    """One response per prompt from sampler actors serving `policy_path`."""
    import ray

    from raylign.sampling.actor import create_samplers
    from raylign.sampling.base import SamplingConfig

    sampling = SamplingConfig(backend=config.backend, num_samples=1, temperature=config.temperature,
                              max_new_tokens=config.max_new_tokens, max_prompt_tokens=256, num_samplers=1,
                              num_cpus_per_sampler=0.5)
    samplers = create_samplers(policy_path, sampling)
    try:
        return ray.get(samplers[0].generate.remote(prompts, 1))
    finally:
        samplers.shutdown()


def reference_perplexity(rows: list[dict], reference_path: str, max_length: int) -> float:
    """exp(mean token NLL) of the responses under the reference model (response tokens only)."""
    import ray

    from raylign.scoring.reference import ReferenceActor

    actor = ReferenceActor.options(num_cpus=0.5).remote(reference_path, max_length, 8)
    try:
        logprobs = ray.get(actor.response_logprobs.remote(
            [{"prompt_token_ids": r["prompt_token_ids"], "response_token_ids": r["response_token_ids"]} for r in rows]))
    finally:
        ray.kill(actor)
    tokens = [lp for row in logprobs for lp in row]
    return math.exp(-statistics.fmean(tokens)) if tokens else float("nan")


def _scores(model: str, rows: list[dict], max_length: int) -> list[float]:
    from raylign.scoring.base import RewardConfig
    from raylign.scoring.sources import make_reward_source

    source = make_reward_source(RewardConfig(kind="actor", model=model, max_length=max_length, num_cpus=0.5))
    try:
        return source.score(rows)
    finally:
        source.close()


def judge_win_rate(prompts: list[dict], baseline: list[dict], candidate: list[dict], spec: str) -> dict:
    """Win rate of `candidate` over `baseline` under an annotator of `raylign annotate`
    (order swapped by a seeded hash, identical outputs tied, no label noise)."""
    from raylign.evaluation.leaderboard import winrate
    from raylign.feedback.config import build_annotator, parse_spec
    from raylign.feedback.job import annotate_rows
    from raylign.feedback.pool import AnnotatorPool, PoolConfig

    pairs = [{"instruction": p["prompt"], "input": "", "output_1": b["response"], "output_2": c["response"]}
             for p, b, c in zip(prompts, baseline, candidate)]
    pool = AnnotatorPool([build_annotator(parse_spec(spec))], PoolConfig(seed=0, training=False)).prepare()
    try:
        judged = annotate_rows(pairs, pool, use_ray_data=False)
    finally:
        pool.close()
    return winrate([row["preference"] for row in judged])


def compare(policies: dict[str, str], config: CompareConfig) -> list[dict]:
    """Rows of the report, the first policy being the baseline every other is judged against."""
    from raylign.algorithms.online_job import DataConfig, load_prompts
    from raylign.models.registry import resolve_model

    prompts = load_prompts(DataConfig(path=config.data, kind="prompt", split=config.split, limit=config.limit))
    reference = str(resolve_model(config.reference))
    outputs = {name: generate(str(resolve_model(path)), prompts, config) for name, path in policies.items()}
    baseline = next(iter(outputs.values()))
    report = []
    for name, rows in outputs.items():
        rewards = _scores(config.reward_model, rows, config.max_length)
        entry = {
            "policy": name,
            "path": policies[name],
            "prompts": len(rows),
            "reward_mean": statistics.fmean(rewards),
            "reward_sem": statistics.stdev(rewards) / math.sqrt(len(rewards)) if len(rewards) > 1 else 0.0,
            "reference_ppl": reference_perplexity(rows, reference, config.max_length),
            "response_tokens_mean": statistics.fmean(len(r["response_token_ids"]) for r in rows),
        }
        if rows is not baseline:
            stats = judge_win_rate(prompts, baseline, rows, config.judge)
            entry.update(win_rate_vs_start=stats["win_rate"], win_rate_se=stats["standard_error"])
        entry["examples"] = [{"prompt": r["prompt"][-200:], "response": r["response"]} for r in rows[:3]]
        report.append(entry)
    return report


def format_report(report: list[dict], config: CompareConfig) -> str:
    lines = [f"held-out: {config.data} split={config.split}, {report[0]['prompts']} prompts, greedy={config.temperature <= 0}",
             f"reward = {config.reward_model} (what the methods optimise); second judge = {config.judge}",
             f"{'policy':<14}{'reward':>9}{'± se':>7}{'ref PPL':>9}{'tokens':>8}{'win vs start (judge)':>24}"]
    for e in report:
        win = f"{e['win_rate_vs_start']:.1f} ± {e['win_rate_se']:.1f}" if "win_rate_vs_start" in e else "(baseline)"
        lines.append(f"{e['policy']:<14}{e['reward_mean']:>9.3f}{e['reward_sem']:>7.3f}{e['reference_ppl']:>9.2f}"
                     f"{e['response_tokens_mean']:>8.1f}{win:>24}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    from raylign.config import build_config
    from raylign.runtime import init_ray

    parser = argparse.ArgumentParser(prog="raylign eval compare", description=__doc__.splitlines()[0])
    parser.add_argument("policies", nargs="+", help="NAME=PATH, the starting policy first (e.g. start=SmolLM2-135M-Instruct)")
    parser.add_argument("--output", default="runs/compare/report.json")
    for field, info in CompareConfig.model_fields.items():
        parser.add_argument(f"--{field.replace('_', '-')}", dest=field, type=type(info.default), default=info.default)
    args = parser.parse_args(argv)
    policies = {}
    for item in args.policies:
        name, sep, path = item.partition("=")
        if not sep:
            parser.error(f"'{item}' must look like NAME=PATH")
        policies[name] = path
    config = build_config(CompareConfig, {f: getattr(args, f) for f in CompareConfig.model_fields}, "arguments")
    init_ray(None)
    report = compare(policies, config)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": config.model_dump(), "report": report}, indent=1))
    print(format_report(report, config))
    print(f"report: {out}")
    return 0
