"""`raylign eval policy`: the same three figures for every trained policy (RRHF, RAFT, PPO, DPO, CUT...).

On held-out prompts (the seeded-hash split the reward model and offline trainers use):

- reward: mean reward of the policy's responses (n = 1, greedy by default) under a reward
  source (a reward model actor, e.g. the shipped `hh-rm-smollm2`, or a `module:callable`);
- reference perplexity: exp of the mean token NLL of those responses under the reference
  model (default: the starting model), which flags degenerate, reward-hacked text;
- preference accuracy: on the held-out pairs, the DPO implicit reward
  beta * (log pi(y) - log ref(y)) (sums over response tokens, EOS included) of chosen vs
  rejected; a pair is correct when chosen's is higher, ties count 0.5.

    raylign eval policy --model runs/cut_judgments --data ../shared/data/hh_rlhf_harmless.jsonl.gz \
        --on-error skip --split test --limit 64 --reward-model hh-rm-smollm2 --output eval_policy.json
"""

from __future__ import annotations

import argparse
import math
import time

from raylign.data.adapters import FORMATS, load_rows
from raylign.data.readers import DataError
from raylign.data.splits import SPLITS, select_split
from raylign.evaluation.reports import write_report
from raylign.preflight import check_args, check_reward
from raylign.scoring.base import RewardConfig
from raylign.scoring.repetition import repeated_ngram_fraction


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign eval policy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the policy: HF directory or model name")
    parser.add_argument("--reference", default="SmolLM2-135M-Instruct", help="reference model (the starting policy)")
    parser.add_argument("--data", required=True, help="prompts or pairs: HH-RLHF, AlpacaEval, {prompt[,chosen,rejected]}")
    parser.add_argument("--format", default="auto", choices=FORMATS)
    parser.add_argument("--on-error", default="raise", choices=["raise", "skip"], help="skip malformed rows")
    parser.add_argument("--split", default="test", choices=SPLITS, help="the recipes' seeded hash split")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=64, help="prompts (and pairs) after the split")
    parser.add_argument("--reward-model", default="hh-rm-smollm2", help="reward model path or shipped name")
    parser.add_argument("--reward-function", help="'module:callable' reward instead of a reward model")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO implicit-reward scale")
    parser.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-prompt-tokens", type=int, default=384)
    parser.add_argument("--max-length", type=int, default=512, help="prompt + response tokens when scoring")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", help="write the report (and the responses) as JSON here")
    return parser


def load_eval_rows(args) -> tuple[list[dict], bool]:
    """Held-out rows and whether they are pairs (files without pairs give prompts only)."""
    try:
        rows, pairs = load_rows(args.data, "preference", args.format, on_error=args.on_error), True
    except DataError as err:
        if "not 'preference' rows" not in str(err):
            raise
        rows, pairs = load_rows(args.data, "prompt", args.format, on_error=args.on_error), False
    rows = select_split(rows, args.split, args.test_fraction, args.validation_fraction, args.split_seed)
    rows = rows[: args.limit] if args.limit is not None else rows
    if not rows:
        raise DataError(f"{args.data}: no rows in split '{args.split}'")
    return rows, pairs


def sampling_config(args):
    from raylign.sampling.base import SamplingConfig

    return SamplingConfig(backend=args.backend, num_samples=1, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_p=args.top_p, seed=args.seed, num_samplers=1,
                          num_cpus_per_sampler=1.0, max_prompt_tokens=args.max_prompt_tokens)


def generate(model_path: str, rows: list[dict], sampling, batch_size: int = 8, num_samples: int = 1) -> list[dict]:
    """`num_samples` responses per prompt from sampler actors (rows are dealt over them in chunks)."""
    import ray

    from raylign.sampling.actor import create_samplers

    samplers = create_samplers(model_path, sampling)
    try:
        chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
        futures = [samplers[i % len(samplers)].generate.remote(chunk, num_samples) for i, chunk in enumerate(chunks)]
        return [r for part in ray.get(futures) for r in part]
    finally:
        samplers.shutdown()


def _encode(tokenizer, row: dict, response: str, max_prompt_tokens: int, max_length: int, finished: bool = True) -> dict:
    from raylign.models.chat import as_messages, encode_prompt, encode_response

    ids = encode_response(tokenizer, response, max_length)
    return {"prompt_token_ids": encode_prompt(tokenizer, as_messages(row), max_prompt_tokens),
            "response_token_ids": ids if finished else ids[:-1]}


def logprob_actor(model_path: str, max_length: int, batch_size: int = 8, num_cpus: float = 1.0):
    from raylign.scoring.reference import ReferenceActor

    return ReferenceActor.options(num_cpus=num_cpus).remote(model_path, max_length, batch_size)


def reference_perplexity(ref_actor, tokenizer, rollouts: list[dict], max_prompt_tokens: int, max_length: int) -> dict:
    """exp(mean token NLL) of the responses under the reference, pooled over tokens. Responses
    are re-tokenised by the reference's tokenizer (a policy may have extra control tokens, and
    its prompt prefix is not the reference's); EOS counts only when the policy stopped."""
    import ray

    encoded = [_encode(tokenizer, r, r["response"], max_prompt_tokens, max_length, r.get("finish_reason") == "stop")
               for r in rollouts]
    per_row = ray.get(ref_actor.response_logprobs.remote(encoded))
    tokens = sum(len(x) for x in per_row)
    nll = -sum(sum(x) for x in per_row) / max(1, tokens)
    return {"reference_ppl": math.exp(nll), "reference_nll": nll, "response_tokens": tokens}


def implicit_reward_accuracy(policy_lp: list[float], ref_lp: list[float], beta: float) -> dict:
    """Rows alternate chosen, rejected: accuracy (ties 0.5) and mean margin of beta*(pi - ref)."""
    rewards = [beta * (p - r) for p, r in zip(policy_lp, ref_lp)]
    chosen, rejected = rewards[0::2], rewards[1::2]
    correct = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)]
    return {"preference_accuracy": sum(correct) / len(correct),
            "implicit_reward_margin": sum(c - r for c, r in zip(chosen, rejected)) / len(correct),
            "pairs": len(correct)}


def preference_accuracy(policy_actor, ref_actor, tokenizer, rows: list[dict], args) -> dict:
    import ray

    encoded = [_encode(tokenizer, row, row[key], args.max_prompt_tokens, args.max_length)
               for row in rows for key in ("chosen", "rejected")]
    policy, ref = ray.get([policy_actor.response_logprobs.remote(encoded), ref_actor.response_logprobs.remote(encoded)])
    return implicit_reward_accuracy([sum(x) for x in policy], [sum(x) for x in ref], args.beta)


def evaluate(args) -> dict:
    import ray

    from raylign.models.chat import load_tokenizer
    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray
    from raylign.scoring.base import RewardConfig
    from raylign.scoring.sources import make_reward_source

    started = time.time()
    model_path, ref_path = str(resolve_model(args.model)), str(resolve_model(args.reference))
    rows, pairs = load_eval_rows(args)
    init_ray(quiet=True, dashboard=False)
    timings: dict[str, float] = {}
    clock = time.time()
    rollouts = generate(model_path, rows, sampling_config(args), args.batch_size)
    timings["generate_s"] = round(time.time() - clock, 1)

    clock = time.time()
    reward = RewardConfig(kind="function", function=args.reward_function) if args.reward_function else \
        RewardConfig(kind="actor", model=args.reward_model, max_length=args.max_length, num_cpus=1.0)
    source = make_reward_source(reward)
    try:
        scores = source.score(rollouts)
    finally:
        source.close()
    timings["reward_s"] = round(time.time() - clock, 1)

    clock = time.time()
    ref_tokenizer = load_tokenizer(ref_path)
    ref_actor = logprob_actor(ref_path, args.max_length, args.batch_size)
    report: dict = {"prompts": len(rollouts), "reward_mean": sum(scores) / len(scores),
                    "reward_std": _std(scores),
                    "response_words": sum(len(r["response"].split()) for r in rollouts) / len(rollouts),
                    "stopped_fraction": sum(r.get("finish_reason") == "stop" for r in rollouts) / len(rollouts),
                    "repeated_4grams": sum(repeated_ngram_fraction(r["response"]) for r in rollouts) / len(rollouts)}
    report.update(reference_perplexity(ref_actor, ref_tokenizer, rollouts, args.max_prompt_tokens, args.max_length))
    timings["perplexity_s"] = round(time.time() - clock, 1)
    if pairs:
        clock = time.time()
        policy_actor = logprob_actor(model_path, args.max_length, args.batch_size)
        report.update(preference_accuracy(policy_actor, ref_actor, ref_tokenizer, rows, args))
        ray.kill(policy_actor)
        timings["pairs_s"] = round(time.time() - clock, 1)
    ray.kill(ref_actor)
    report.update(model=str(args.model), reference=str(args.reference), data=str(args.data), split=args.split,
                  reward=args.reward_function or args.reward_model, beta=args.beta, temperature=args.temperature,
                  max_new_tokens=args.max_new_tokens, seconds=round(time.time() - started, 1), **timings)
    report["samples"] = [{"prompt": r["prompt"], "response": r["response"], "reward": s,
                          "stopped": r.get("finish_reason") == "stop"} for r, s in zip(rollouts, scores)]
    return report


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def format_report(report: dict) -> str:
    lines = [f"policy {report['model']} on {report['data']} (split: {report['split']}, {report['prompts']} prompts)",
             f"  {'reward (' + str(report['reward']) + ')':<40} {report['reward_mean']:>10.4f}  (std {report['reward_std']:.4f})",
             f"  {'reference perplexity (' + str(report['reference']) + ')':<40} {report['reference_ppl']:>10.4f}",
             f"  {'response words / stopped':<40} {report['response_words']:>10.1f}  ({report['stopped_fraction']:.0%} ended with EOS)",
             f"  {'repeated word 4-grams (seq-rep-4)':<40} {report.get('repeated_4grams', math.nan):>10.1%}"]
    if "preference_accuracy" in report:
        lines.append(f"  {'preference accuracy (beta ' + str(report['beta']) + ', ties 0.5)':<40} "
                     f"{report['preference_accuracy']:>10.4f}  ({report['pairs']} pairs, margin "
                     f"{report['implicit_reward_margin']:.4f})")
    lines.append(f"  {report['seconds']} s")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    check_args(args, models=("model", "reference"), inputs=("data",), outputs=("output",))
    if args.reward_function:
        check_reward(RewardConfig(kind="function", function=args.reward_function), "--reward-function")
    else:
        check_args(args, models=("reward_model",))
    report = evaluate(args)
    print(format_report(report))
    if args.output:
        write_report(report, args.output)
    return 0
