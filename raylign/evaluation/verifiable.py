"""`raylign eval verifiable`: held-out accuracy of policies on problems with checkable answers.

    raylign eval verifiable start=SmolLM2-135M-Instruct grpo=runs/grpo_arith/final --data FILE [--samples 8]

For each policy: pass@1 of its greedy answers (the verifier's check, by default the final
number against the known one), with `--samples k` also pass@1 and pass@k of k sampled answers
(the unbiased estimator of Chen et al., 2021), accuracy per task, mean response length and the
share of responses that stopped (EOS) rather than hit the token limit. Every policy after the
first is compared with it problem by problem: the paired change of greedy accuracy with its
standard error, and the problems it gets right that the start got wrong (and the reverse).
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import defaultdict

from raylign.data.bundled import ARITH_TEST
from raylign.evaluation.reports import write_report
from raylign.preflight import check_args, check_named_models


def pass_at_k(n: int, correct: int, k: int) -> float:
    """P(at least one of k answers drawn from the n is correct), unbiased (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def paired_change(correct: list[bool], baseline: list[bool]) -> dict:
    """Mean of the per-problem differences in correctness, its standard error, better / worse."""
    if len(correct) != len(baseline):
        raise ValueError(f"paired figures need the same problems: {len(correct)} vs {len(baseline)}")
    diffs = [float(a) - float(b) for a, b in zip(correct, baseline)]
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return {"accuracy_delta": statistics.fmean(diffs), "accuracy_delta_se": se,
            "problems_better": sum(d > 0 for d in diffs), "problems_worse": sum(d < 0 for d in diffs)}


def score_policy(name: str, rows: list[dict], greedy: list[dict], sampled: dict[str, list[dict]], verifier,
                 samples: int) -> dict:
    """The figures of one policy from its greedy rollouts and (optionally) its sampled ones."""
    from raylign.scoring.verifiers import verify

    answer = {r["prompt_id"]: r["answer"] for r in rows}
    correct = [verify(g["response"], answer[g["prompt_id"]], verifier) >= 1.0 for g in greedy]
    by_task: dict[str, list[bool]] = defaultdict(list)
    for g, ok in zip(greedy, correct):
        by_task[g.get("task") or "all"].append(ok)
    n = len(correct)
    accuracy = sum(correct) / n
    entry = {
        "policy": name, "problems": n, "accuracy": accuracy,
        "accuracy_se": math.sqrt(accuracy * (1 - accuracy) / n) if n else 0.0,
        "accuracy_by_task": {task: sum(v) / len(v) for task, v in sorted(by_task.items())},
        "response_tokens_mean": statistics.fmean(len(g["response_token_ids"]) for g in greedy),
        "stopped_fraction": sum(g.get("finish_reason") == "stop" for g in greedy) / n,
        "correct": correct,
        "responses": [g["response"] for g in greedy],
    }
    if samples:
        counts = [sum(verify(s["response"], answer[pid], verifier) >= 1.0 for s in group)
                  for pid, group in sampled.items()]
        entry[f"pass@1_of_{samples}"] = statistics.fmean(c / samples for c in counts)
        entry[f"pass@{samples}"] = statistics.fmean(pass_at_k(samples, c, samples) for c in counts)
    return entry


def evaluate(policies: dict[str, str], rows: list[dict], args) -> list[dict]:
    """Generate with each policy (greedy, then k samples) and score it."""
    from raylign.evaluation.policy_eval import generate
    from raylign.models.registry import resolve_model
    from raylign.sampling.base import SamplingConfig
    from raylign.scoring.verifiers import VerifierConfig

    verifier = VerifierConfig(extract=args.extract, checks={name: 1.0 for name in args.check.split(",")})
    common = dict(backend=args.backend, max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
                  num_samplers=args.num_samplers, num_cpus_per_sampler=args.cpus_per_sampler, seed=args.seed)
    report = []
    for name, path in policies.items():
        model = str(resolve_model(path))
        greedy = generate(model, rows, SamplingConfig(num_samples=1, temperature=0.0, **common))
        sampled: dict[str, list[dict]] = defaultdict(list)
        if args.samples:
            for r in generate(model, rows, SamplingConfig(num_samples=args.samples, temperature=args.temperature,
                                                          **common), num_samples=args.samples):
                sampled[r["prompt_id"]].append(r)
        entry = score_policy(name, rows, greedy, sampled, verifier, args.samples)
        entry["path"] = path
        if report:
            entry.update(paired_change(entry["correct"], report[0]["correct"]))
        report.append(entry)
        print(f"[eval verifiable] {name}: accuracy {entry['accuracy']:.3f}", flush=True)
    return report


def format_report(report: list[dict], data: str, samples: int) -> str:
    first = report[0]
    lines = [f"held-out: {data}, {first['problems']} problems; accuracy = pass@1 of the greedy answer",
             f"{'policy':<16}{'accuracy':>9}{'± se':>7}{'Δ vs start ± paired se':>24}{'better/worse':>14}"
             f"{'tokens':>8}{'stopped':>9}" + (f"{f'pass@1/{samples}':>11}{f'pass@{samples}':>9}" if samples else "")]
    for e in report:
        delta = f"{e['accuracy_delta']:+.3f} ± {e['accuracy_delta_se']:.3f}" if e is not first else ""
        counts = f"{e['problems_better']}/{e['problems_worse']}" if e is not first else ""
        line = (f"{e['policy']:<16}{e['accuracy']:>9.3f}{e['accuracy_se']:>7.3f}{delta:>24}{counts:>14}"
                f"{e['response_tokens_mean']:>8.1f}{100 * e['stopped_fraction']:>8.0f}%")
        if samples:
            line += f"{e[f'pass@1_of_{samples}']:>11.3f}{e[f'pass@{samples}']:>9.3f}"
        lines.append(line)
        lines.append(f"{'':<16}by task: " + ", ".join(f"{t} {a:.2f}" for t, a in e["accuracy_by_task"].items()))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign eval verifiable", description=__doc__.splitlines()[0])
    parser.add_argument("policies", nargs="+", help="NAME=PATH, the starting policy first")
    parser.add_argument("--data", default=str(ARITH_TEST), help="problems with answers (generic {prompt, answer} "
                        "or GSM8K); default: the bundled arithmetic test split")
    parser.add_argument("--format", default="auto")
    parser.add_argument("--limit", type=int, default=None, help="the first N problems")
    parser.add_argument("--samples", type=int, default=0, help="k sampled answers per problem for pass@k (0: none)")
    parser.add_argument("--temperature", type=float, default=1.0, help="of the sampled answers")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--max-prompt-tokens", type=int, default=256)
    parser.add_argument("--backend", default="vllm", choices=["vllm", "hf"])
    parser.add_argument("--num-samplers", type=int, default=1)
    parser.add_argument("--cpus-per-sampler", type=float, default=1.0)
    parser.add_argument("--extract", default="auto", help="answer extractor: auto, gsm8k, boxed, last_number")
    parser.add_argument("--check", default="numeric", help="check(s) an answer must pass, comma separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", help="write the report (and every answer) as JSON here")
    return parser


def main(argv: list[str]) -> int:
    from raylign.data.adapters import check_source, load_rows
    from raylign.runtime import init_ray

    parser = _parser()
    args = parser.parse_args(argv)
    policies = check_named_models(args.policies)
    check_args(args, inputs=("data",), outputs=("output",))
    rows = load_rows(args.data, "prompt", check_source(args.data, "prompt", args.format), args.limit)
    if any("answer" not in r for r in rows):
        parser.error(f"{args.data}: every problem needs an 'answer' (generic {{prompt, answer}} rows or GSM8K)")
    init_ray(None)
    report = evaluate(policies, rows, args)
    print(format_report(report, args.data, args.samples))
    if args.output:
        write_report({"data": args.data, "arguments": vars(args), "report": report}, args.output, indent=1)
    return 0
