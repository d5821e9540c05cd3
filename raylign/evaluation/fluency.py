"""`raylign eval fluency`: the reference model's perplexity of AlpacaEval outputs files.

The figure to read beside a win rate: outputs that win by drifting into text the starting
model finds unlikely (a reward hack, degenerate repetition) show it here as a higher perplexity.

    raylign eval fluency runs/study/best_of_4.json runs/study/start.json --reference SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
from pathlib import Path

from raylign.data.readers import DataError, iter_records
from raylign.evaluation.reports import write_report
from raylign.feedback.annotators import pair_messages
from raylign.preflight import check_args
from raylign.scoring.repetition import repeated_ngram_fraction


def outputs_rollouts(path: str | Path) -> list[dict]:
    """AlpacaEval outputs (`instruction`, optional `input`, `output`) as prompt + response rows."""
    rows = []
    for rec in iter_records(path):
        pair = {"instruction": rec.field("instruction"), "input": rec.data.get("input")}
        rows.append({"messages": pair_messages(pair), "response": rec.field("output")})
    if not rows:
        raise DataError(f"{path}: no outputs")
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raylign eval fluency", description=__doc__.splitlines()[0])
    parser.add_argument("outputs", nargs="+", help="AlpacaEval outputs files (JSON list or JSONL)")
    parser.add_argument("--reference", default="SmolLM2-135M-Instruct", help="the model whose perplexity is read")
    parser.add_argument("--max-prompt-tokens", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--output", help="write the figures as JSON")
    args = parser.parse_args(argv)
    check_args(args, models=("reference",), inputs=("outputs",), outputs=("output",))

    from transformers import AutoTokenizer

    from raylign.evaluation.policy_eval import logprob_actor, reference_perplexity
    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray

    files = {path: outputs_rollouts(path) for path in args.outputs}  # bad input fails before Ray starts
    reference = str(resolve_model(args.reference))
    init_ray(None, quiet=True)
    actor = logprob_actor(reference, args.max_length, args.batch_size)
    tokenizer = AutoTokenizer.from_pretrained(reference)
    report = []
    for path, rows in files.items():
        stats = reference_perplexity(actor, tokenizer, rows, args.max_prompt_tokens, args.max_length)
        report.append({"outputs": path, "n": len(rows), **stats,
                       "avg_chars": sum(len(r["response"]) for r in rows) / len(rows),
                       "repeated_4grams": sum(repeated_ngram_fraction(r["response"]) for r in rows) / len(rows)})
    print(f"reference perplexity under {args.reference}")
    print(f"{'outputs':48} {'n':>5} {'ref PPL':>8} {'tokens':>8} {'avg chars':>10} {'rep-4':>6}")
    for row in report:
        print(f"{row['outputs'][-48:]:48} {row['n']:5d} {row['reference_ppl']:8.3f} {row['response_tokens']:8d} "
              f"{row['avg_chars']:10.1f} {row['repeated_4grams']:6.1%}")
    if args.output:
        write_report(report, args.output, announce=False)
    return 0
