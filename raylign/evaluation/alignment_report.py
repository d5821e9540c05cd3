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

from raylign.config import InputPath, ModelName, StrictModel
from raylign.data.bundled import BUNDLED_HH
from raylign.evaluation.policy_eval import generate, logprob_actor, reference_perplexity
from raylign.feedback.config import check_annotators
from raylign.preflight import check_args, check_config, check_named_models
from raylign.scoring.repetition import repeated_ngram_fraction


class CompareConfig(StrictModel):
    data: InputPath = str(BUNDLED_HH)
    split: str = "test"
    limit: int = 64
    max_new_tokens: int = 48
    max_prompt_tokens: int = 256
    temperature: float = 0.0  # greedy: the comparison does not depend on sampling luck
    backend: str = "vllm"
    reward_model: ModelName = "hh-rm-smollm2"
    # the second judge, as an annotator spec of `raylign annotate` (rm:NAME, judge:MODEL, http:URL#MODEL)
    judge: str = "judge:SmolLM2-135M-Instruct"
    reference: ModelName = "SmolLM2-135M-Instruct"
    max_length: int = 320


def _sampling(config: CompareConfig):
    from raylign.sampling.base import SamplingConfig

    return SamplingConfig(backend=config.backend, num_samples=1, temperature=config.temperature,
                          max_new_tokens=config.max_new_tokens, max_prompt_tokens=config.max_prompt_tokens,
                          num_samplers=1, num_cpus_per_sampler=1.0)


def _perplexities(outputs: dict[str, list[dict]], config: CompareConfig) -> dict[str, float]:
    import ray

    from raylign.models.chat import load_tokenizer
    from raylign.models.registry import resolve_model

    reference = str(resolve_model(config.reference))
    tokenizer = load_tokenizer(reference)
    actor = logprob_actor(reference, config.max_length)
    try:
        return {name: reference_perplexity(actor, tokenizer, rows, config.max_prompt_tokens, config.max_length)["reference_ppl"]
                for name, rows in outputs.items()}
    finally:
        ray.kill(actor)


def _rewards(outputs: dict[str, list[dict]], config: CompareConfig) -> dict[str, list[float]]:
    from raylign.scoring.base import RewardConfig
    from raylign.scoring.sources import make_reward_source

    source = make_reward_source(RewardConfig(kind="actor", model=config.reward_model, max_length=config.max_length,
                                             num_cpus=1.0))
    try:
        return {name: source.score(rows) for name, rows in outputs.items()}
    finally:
        source.close()


def judge_win_rates(prompts: list[dict], outputs: dict[str, list[dict]], spec: str) -> dict[str, dict]:
    """Win rate of every policy but the first over the first, under an annotator of
    `raylign annotate` (identical outputs tied, no label noise). A judge that reads the two
    outputs together (an LLM judge) is asked in both orders and the two judgments averaged:
    a small judge can pick whichever output comes first every time (SmolLM2-135M does, on HH),
    and a seeded random order would turn that bias into a coin flip posing as a verdict."""
    from raylign.evaluation.judge_agreement import (
        both_orders,
        judge_both_orders,
        same_side,
    )
    from raylign.evaluation.leaderboard import winrate
    from raylign.feedback.cache import AnnotationCache
    from raylign.feedback.config import build_annotator, parse_spec

    names = list(outputs)
    baseline = outputs[names[0]]
    annotator = build_annotator(parse_spec(spec))
    annotator.prepare()
    cache = AnnotationCache()
    stats = {}
    try:
        for name in names[1:]:
            pairs = [{"instruction": p["prompt"], "input": "", "output_1": b["response"], "output_2": c["response"]}
                     for p, b, c in zip(prompts, baseline, outputs[name])]
            shown, swapped = judge_both_orders(annotator, pairs, cache, use_ray_data=False)
            if swapped is None:
                stats[name] = {**winrate(shown), "swap_consistency": None}
                continue
            stats[name] = {**winrate([both_orders(a, b) for a, b in zip(shown, swapped)]),
                           "swap_consistency": statistics.fmean(same_side(a, b) for a, b in zip(shown, swapped))}
    finally:
        annotator.close()
    return stats


def _with_wins(entry: dict, wins: dict[str, dict]) -> dict:
    for key in ("win_rate_vs_start", "win_rate_se", "judge_swap_consistency", "judge_wins", "judge_losses",
                "judge_ties", "discrete_win_rate_vs_start"):
        entry.pop(key, None)
    if entry["policy"] in wins:
        win = wins[entry["policy"]]
        # win_rate averages the judge's soft preferences (a reward model's small score gaps pull
        # it toward 50); the counts say on how many prompts the judge preferred which side.
        entry.update(win_rate_vs_start=win["win_rate"], win_rate_se=win["standard_error"],
                     judge_swap_consistency=win["swap_consistency"], judge_wins=win["n_wins"],
                     judge_losses=win["n_wins_base"], judge_ties=win["n_draws"],
                     discrete_win_rate_vs_start=win["discrete_win_rate"])
    return entry


def _standard_error(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


def paired_difference(scores: list[float], baseline: list[float]) -> dict[str, float]:
    """Mean per-prompt reward difference from the baseline and its standard error. Both
    policies answer the same prompts, so the prompt-to-prompt spread cancels: this SE is
    the one that says whether a gain is clear (the two unpaired SEs overstate it)."""
    if len(scores) != len(baseline):
        raise ValueError(f"paired scores need the same prompts: {len(scores)} vs {len(baseline)}")
    diffs = [a - b for a, b in zip(scores, baseline)]
    return {"reward_delta": statistics.fmean(diffs), "reward_delta_se": _standard_error(diffs),
            "prompts_better": sum(d > 0 for d in diffs), "prompts_worse": sum(d < 0 for d in diffs)}


def compare(policies: dict[str, str], config: CompareConfig) -> list[dict]:
    """Rows of the report, the first policy being the baseline every other is judged against.
    Each role (reward model, reference, judge) starts once and serves every policy."""
    from raylign.data.config import PromptDataConfig
    from raylign.data.prompt_corpus import load_prompts
    from raylign.models.registry import resolve_model

    prompts = load_prompts(PromptDataConfig(path=config.data, kind="prompt", split=config.split, limit=config.limit,
                                            on_error="skip"))
    outputs = {name: generate(str(resolve_model(path)), prompts, _sampling(config)) for name, path in policies.items()}
    rewards = _rewards(outputs, config)
    perplexities = _perplexities(outputs, config)
    wins = judge_win_rates(prompts, outputs, config.judge)
    report = []
    baseline = rewards[next(iter(outputs))]
    for name, rows in outputs.items():
        scores = rewards[name]
        entry = {
            "policy": name,
            "path": policies[name],
            "prompts": len(rows),
            "reward_mean": statistics.fmean(scores),
            "reward_sem": _standard_error(scores),
            **paired_difference(scores, baseline),
            "reference_ppl": perplexities[name],
            "response_tokens_mean": statistics.fmean(len(r["response_token_ids"]) for r in rows),
            "stopped_fraction": statistics.fmean(r.get("finish_reason") == "stop" for r in rows),
            "repeated_4grams": statistics.fmean(repeated_ngram_fraction(r["response"]) for r in rows),
        }
        _with_wins(entry, wins)
        entry["examples"] = [{"prompt": r["prompt"][-200:], "response": r["response"]} for r in rows[:3]]
        entry["responses"] = [{"prompt": r["prompt"], "response": r["response"], "reward": s}
                              for r, s in zip(rows, scores)]
        report.append(entry)
    return report


def rejudge(saved: dict, judge: str) -> list[dict]:
    """A saved `eval compare` report with the win rates recomputed under another judge, from
    its stored responses (no sampling, so a judge can be swapped or checked afterwards)."""
    report = saved["report"]
    prompts = [{"prompt": r["prompt"]} for r in report[0]["responses"]]
    outputs = {e["policy"]: [{"response": r["response"]} for r in e["responses"]] for e in report}
    if any(len(rows) != len(prompts) for rows in outputs.values()):
        raise ValueError("the saved report's policies answered different numbers of prompts")
    wins = judge_win_rates(prompts, outputs, judge)
    rejudged = []
    for entry in report:
        entry = _with_wins(dict(entry), wins)
        # reports saved before the repetition column still hold the responses to measure it
        entry.setdefault("repeated_4grams", statistics.fmean(repeated_ngram_fraction(r["response"])
                                                             for r in entry["responses"]))
        rejudged.append(entry)
    return rejudged


def _repetition(entry: dict) -> str:
    return f"{entry['repeated_4grams']:.0%}" if "repeated_4grams" in entry else ""


def format_report(report: list[dict], config: CompareConfig) -> str:
    lines = [f"held-out: {config.data} split={config.split}, {report[0]['prompts']} prompts, greedy={config.temperature <= 0}",
             f"reward = {config.reward_model} (what the methods optimise); second judge = {config.judge}",
             f"{'policy':<14}{'reward':>9}{'± se':>7}{'Δ vs start ± paired se':>24}{'ref PPL':>9}{'tokens':>8}{'rep-4':>7}"
             f"{'win vs start (judge) (won/lost)':>32}"]
    for e in report:
        win = "(baseline)"
        if "win_rate_vs_start" in e:
            counts = f" ({e['judge_wins']}/{e['judge_losses']})" if "judge_wins" in e else ""
            win = f"{e['win_rate_vs_start']:.1f} ± {e['win_rate_se']:.1f}{counts}"
        delta = f"{e['reward_delta']:+.3f} ± {e['reward_delta_se']:.3f}" if e is not report[0] else ""
        lines.append(f"{e['policy']:<14}{e['reward_mean']:>9.3f}{e['reward_sem']:>7.3f}{delta:>24}"
                     f"{e['reference_ppl']:>9.2f}{e['response_tokens_mean']:>8.1f}{_repetition(e):>7}{win:>32}")
    consistency = [e["judge_swap_consistency"] for e in report if e.get("judge_swap_consistency") is not None]
    if consistency:
        lines.append(f"the judge read both orders of every pair (averaged); it picked the same output in both "
                     f"orders on {100 * statistics.fmean(consistency):.0f}% of pairs (100%: no position bias)")
        if statistics.fmean(consistency) < 0.5:
            lines.append("warning: the judge mostly picks by position, so its win rates say little; check it with "
                         "`raylign eval judges` and prefer one that agrees with human labels on these prompts")
    return "\n".join(lines)


def read_saved_report(path: str) -> dict:
    """A report.json of `eval compare`, or one clear error naming the file."""
    from raylign.data.readers import DataError

    if not Path(path).is_file():
        raise DataError(f"{path}: no such report (raylign eval compare writes one with --output)")
    try:
        saved = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("report"), list) or not saved["report"] \
            or any("responses" not in e for e in saved["report"]) or "config" not in saved:
        raise DataError(f"{path}: not a report of raylign eval compare (needs 'config' and 'report' with 'responses')")
    return saved


def rejudge_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raylign eval rejudge", description=rejudge.__doc__.split("\n")[0])
    parser.add_argument("report", help="a report.json written by raylign eval compare")
    parser.add_argument("--judge", required=True, help="annotator spec (rm:NAME, judge:MODEL, http:URL#MODEL)")
    parser.add_argument("--output", help="where to write the re-judged report (default: beside the input)")
    args = parser.parse_args(argv)
    from raylign.config import build_config
    from raylign.runtime import init_ray

    check_args(args, inputs=("report",), outputs=("output",))
    check_annotators([args.judge], "--judge")
    saved = read_saved_report(args.report)
    config = build_config(CompareConfig, {**saved["config"], "judge": args.judge}, args.report)
    init_ray(None)
    report = rejudge(saved, args.judge)
    out = Path(args.output or Path(args.report).with_suffix(".rejudged.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": config.model_dump(), "rejudged_from": args.report, "report": report}, indent=1))
    print(format_report(report, config))
    print(f"report: {out}")
    return 0


def main(argv: list[str]) -> int:
    from raylign.config import build_config
    from raylign.runtime import init_ray

    parser = argparse.ArgumentParser(prog="raylign eval compare", description=__doc__.splitlines()[0])
    parser.add_argument("policies", nargs="+", help="NAME=PATH, the starting policy first (e.g. start=SmolLM2-135M-Instruct)")
    parser.add_argument("--output", default="runs/compare/report.json")
    for field, info in CompareConfig.model_fields.items():
        parser.add_argument(f"--{field.replace('_', '-')}", dest=field, type=type(info.default), default=info.default)
    args = parser.parse_args(argv)
    policies = check_named_models(args.policies)
    config = build_config(CompareConfig, {f: getattr(args, f) for f in CompareConfig.model_fields}, "arguments")
    check_config(config)
    check_annotators([config.judge], "--judge")
    check_args(args, outputs=("output",))
    init_ray(None)
    report = compare(policies, config)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": config.model_dump(), "report": report}, indent=1))
    print(format_report(report, config))
    print(f"report: {out}")
    return 0
