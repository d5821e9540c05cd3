"""`raylign eval cut`: does a CUT-trained policy make the judged-bad tokens less likely?

On held-out judgments, the starting model flags each judged response's inappropriate
tokens by CUT's own rule (P(y_t | judgment prompt) / P(y_t | plain prompt) > threshold).
Those flags are then fixed, and each model is measured on the plain prompt:

- judged_bad_logprob / judged_bad_prob: mean log p / p of the flagged tokens (should fall);
- other_negative_logprob: the unflagged tokens of the same responses;
- positive_nll: mean token NLL of responses judged acceptable (fluency: should not rise much).

    raylign eval cut --model runs/cut_judgments --start SmolLM2-135M-Instruct \
        --data ../shared/data/cut_judgments_iter3.jsonl.gz --negatives 64 --positives 64
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from raylign.algorithms.cut import CUTConfig, flag_tokens
from raylign.algorithms.cut_data import (
    CUTExample,
    encode_examples,
    is_negative,
    load_judgments,
    pack_examples,
    response_aligned,
)
from raylign.evaluation.reports import write_report
from raylign.preflight import check_args


def heldout_rows(paths, negatives: int, positives: int) -> list[dict]:
    """The first `negatives` judged and `positives` acceptable rows, in file order."""
    rows = load_judgments(paths)
    neg = [r for r in rows if is_negative(r)][:negatives]
    pos = [r for r in rows if not is_negative(r)][:positives]
    return neg + pos


def _load(path: str):
    from transformers import AutoModelForCausalLM

    from raylign.models.registry import resolve_model

    model = AutoModelForCausalLM.from_pretrained(str(resolve_model(path)), dtype=torch.float32).eval()
    model.requires_grad_(False)
    return model


@torch.no_grad()
def start_flags(model, examples: list[CUTExample], pad_id: int, threshold: float, batch_size: int) -> list[list[bool]]:
    """Per example, which response tokens the starting model flags (all False for positives)."""
    from raylign.algorithms.cut_data import aligned_logprobs
    from raylign.models.sequences import token_logprobs

    flags: list[list[bool]] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        packed = pack_examples(chunk, pad_id)
        plain, judged, mask = aligned_logprobs(token_logprobs(model, packed["batch"]), packed)
        flagged = flag_tokens(plain, judged, mask & packed["negative"][:, None], threshold)
        flags += [flagged[i][mask[i]].tolist() for i in range(len(chunk))]
    return flags


@torch.no_grad()
def plain_response_logprobs(model, examples: list[CUTExample], pad_id: int, batch_size: int) -> list[list[float]]:
    from raylign.models.sequences import pack_prompt_responses, token_logprobs

    out: list[list[float]] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = pack_prompt_responses([e.plain_prompt for e in chunk], [e.response for e in chunk], pad_id)
        values, mask = response_aligned(token_logprobs(model, batch), batch["response_mask"])
        out += [values[i][mask[i]].tolist() for i in range(len(chunk))]
    return out


def figures(logprobs: list[list[float]], flags: list[list[bool]], negative: list[bool]) -> dict[str, float]:
    """Token-pooled means over the held-out set (see the module docstring)."""
    bad, other, positive = [], [], []
    for values, flagged, neg in zip(logprobs, flags, negative):
        for value, flag in zip(values, flagged):
            (bad if flag else other if neg else positive).append(value)
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    return {
        "judged_bad_logprob": mean(bad),
        "judged_bad_prob": mean([math.exp(v) for v in bad]),
        "other_negative_logprob": mean(other),
        "positive_nll": -mean(positive),
        "judged_bad_tokens": float(len(bad)),
    }


def paired_change(before: list[list[float]], after: list[list[float]], flags: list[list[bool]]) -> dict[str, float]:
    """The change in judged_bad_prob (after - before, pooled over flagged tokens) with its
    standard error clustered by response: tokens of one response move together, so the
    response, not the token, is the independent unit (a ratio estimator's delta-method SE)."""
    diffs, counts = [], []
    for b, a, flagged in zip(before, after, flags):
        n = sum(flagged)
        if n:
            diffs.append(sum(math.exp(y) - math.exp(x) for x, y, f in zip(b, a, flagged) if f))
            counts.append(n)
    m, tokens = len(diffs), sum(counts)
    if not m:
        return {"judged_bad_prob_change": float("nan"), "judged_bad_prob_change_se": float("nan"),
                "responses_lower": 0.0, "responses_higher": 0.0}
    delta = sum(diffs) / tokens
    spread = sum((d - delta * n) ** 2 for d, n in zip(diffs, counts))
    se = math.sqrt(spread * m / (m - 1)) / tokens if m > 1 else float("nan")
    return {"judged_bad_prob_change": delta, "judged_bad_prob_change_se": se,
            "responses_lower": float(sum(d < 0 for d in diffs)), "responses_higher": float(sum(d > 0 for d in diffs))}


def heldout_report(start: str, models: dict[str, str], rows: list[dict], cut: CUTConfig, max_length: int,
                   batch_size: int = 8) -> dict:
    """Flags from `start`, then the figures of `start` ("before") and of each of `models`."""
    from raylign.models.chat import load_tokenizer
    from raylign.models.registry import resolve_model

    started = time.time()
    tokenizer = load_tokenizer(str(resolve_model(start)))
    examples = encode_examples(tokenizer, rows, cut, max_length)
    negative = [e.negative for e in examples]
    start_model = _load(start)
    flags = start_flags(start_model, examples, tokenizer.pad_token_id, cut.threshold, batch_size)
    before = plain_response_logprobs(start_model, examples, tokenizer.pad_token_id, batch_size)
    report = {"before": figures(before, flags, negative)}
    del start_model
    for name, path in models.items():
        model = _load(path)
        after = plain_response_logprobs(model, examples, tokenizer.pad_token_id, batch_size)
        report[name] = {**figures(after, flags, negative), **paired_change(before, after, flags)}
        del model
    report.update(negatives=sum(negative), positives=len(negative) - sum(negative), threshold=cut.threshold,
                  start=str(start), seconds=round(time.time() - started, 1))
    return report


def format_report(report: dict, title: str) -> str:
    columns = [k for k in report if isinstance(report[k], dict)]
    keys = ["judged_bad_logprob", "judged_bad_prob", "other_negative_logprob", "positive_nll", "judged_bad_tokens"]
    lines = [title, f"  {'':<24}" + "".join(f"{c:>14}" for c in columns)]
    for key in keys:
        lines.append(f"  {key:<24}" + "".join(f"{report[c][key]:>14.4f}" for c in columns))
    for c in columns[1:]:
        r = report[c]
        lines.append(f"  {c}: judged_bad_prob change {r['judged_bad_prob_change']:+.4f} "
                     f"± {r['judged_bad_prob_change_se']:.4f} (se by response); responses lower / higher: "
                     f"{r['responses_lower']:.0f} / {r['responses_higher']:.0f}")
    lines.append(f"  {report['negatives']} judged responses, {report['positives']} acceptable; flags by the start "
                 f"model at ratio > {report['threshold']}")
    return "\n".join(lines)


def after_training(recipe, summary: dict) -> dict:
    """After `raylign train cut`: the held-out judged-bad tokens before and after, when the recipe
    names held-out judgments (`heldout.path`, else `data.test_path`)."""
    heldout_path = recipe.heldout.path or recipe.data.test_path
    if not heldout_path:
        return summary
    rows = heldout_rows(heldout_path, recipe.heldout.negatives, recipe.heldout.positives)
    report = heldout_report(recipe.model, {"after": summary["model_dir"]}, rows, recipe.cut,
                            recipe.data.max_length, recipe.heldout.batch_size)
    report["data"] = heldout_path
    print(format_report(report, f"[cut] held-out judgments ({heldout_path})"), flush=True)
    (Path(recipe.output_dir) / "heldout_cut.json").write_text(json.dumps(report, indent=2))
    return {**summary, "heldout": report}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign eval cut", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the trained policy (HF directory)")
    parser.add_argument("--start", default="SmolLM2-135M-Instruct", help="the starting model: it flags the tokens")
    parser.add_argument("--data", required=True, nargs="+", help="held-out CUT judgment file(s)")
    parser.add_argument("--negatives", type=int, default=64)
    parser.add_argument("--positives", type=int, default=64)
    parser.add_argument("--threshold", type=float, default=1.1)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--max-response-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", help="write the report as JSON here")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    check_args(args, models=("model", "start"), inputs=("data",), outputs=("output",))
    cut = CUTConfig(threshold=args.threshold, max_response_tokens=args.max_response_tokens)
    rows = heldout_rows(args.data, args.negatives, args.positives)
    report = heldout_report(args.start, {"after": args.model}, rows, cut, args.max_length, args.batch_size)
    print(format_report(report, f"CUT held-out judged-bad tokens: {args.model} vs {args.start}"))
    if args.output:
        write_report(report, args.output)
    return 0
