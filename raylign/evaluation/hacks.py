"""`raylign eval hacks`: how often a reward model prefers a rule-made hack to the good answer.

    raylign eval hacks --model hh-rm-smollm2 --data ../shared/data/hh_rlhf_harmless.jsonl.gz \
        --on-error skip --split test --limit 200 --output runs/hacks/hh-rm.json

On held-out preference rows (the recipes' test split), each family of `raylign.data.hack_forms`
pits the dataset's chosen answer against its hacked variants. Per family the report is `eval
rm`'s (accuracy = the share where the good answer wins, margins, calibration), plus the share of
cases where the hack wins (`hack_preferred`, ties count half): the number to drive down. The
`rejected` family is the RM's plain accuracy on the pairs, the line the others are read against.
`--held-out-forms` swaps in hacks no training family makes, to see whether a hack-aware RM learned
more than the suite's own spellings.
"""

from __future__ import annotations

import argparse
import json
import time

from raylign.data.adapters import FORMATS, load_rows
from raylign.data.hack_forms import FAMILIES, HELD_OUT_FAMILIES, hack_cases
from raylign.data.readers import DataError
from raylign.data.splits import SPLITS, select_split
from raylign.evaluation.reports import write_report
from raylign.preflight import check_args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign eval hacks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="reward-model directory or shipped name (hh-rm-smollm2)")
    parser.add_argument("--data", required=True, help="preference pairs: HH-RLHF, AlpacaEval pairs, {prompt,chosen,rejected}")
    parser.add_argument("--format", default="auto", choices=FORMATS)
    parser.add_argument("--on-error", default="raise", choices=["raise", "skip"])
    parser.add_argument("--split", default="test", choices=SPLITS, help="the hash split whose prompts are used")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=200, help="prompts (after the split)")
    parser.add_argument("--families", nargs="*", default=None, help=f"default: all ({', '.join(FAMILIES)})")
    parser.add_argument("--held-out-forms", action="store_true",
                        help=f"the forms `train rm` never learns from instead ({', '.join(HELD_OUT_FAMILIES)}), "
                             "beside the plain pair")
    parser.add_argument("--max-length", type=int, default=None, help="default: the model's training max_length")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", help="write the report as JSON here")
    return parser


def family_report(good: list[float], hacked: list[float]) -> dict:
    from raylign.evaluation.reward_model_metrics import pairwise_report

    report = pairwise_report(good, hacked, [1.0] * len(good), num_bins=5)
    report["hack_preferred"] = 1.0 - report["accuracy"]
    return report


def _key(prompt, response: str) -> str:
    return json.dumps([prompt, response])


def score_once(scorer, pairs: list[tuple]) -> dict[str, float]:
    """Every distinct (prompt, response) scored once: most families share the good answer, so the
    suite costs about half the forward passes of scoring each case's two sides."""
    unique = {_key(p, r): (p, r) for p, r in pairs}
    scores = scorer.score([p for p, _ in unique.values()], [r for _, r in unique.values()])
    return dict(zip(unique, scores))


def evaluate(args: argparse.Namespace) -> dict:
    from raylign.models.registry import resolve_model
    from raylign.scoring.ensemble import load_scorer

    model_dir = resolve_model(args.model)
    rows = select_split(load_rows(args.data, "preference", args.format, None, args.on_error), args.split,
                        args.test_fraction, args.validation_fraction, args.split_seed)[: args.limit]
    if not rows:
        raise DataError(f"{args.data}: no pairs in split '{args.split}'")
    names = args.families or (["rejected", *HELD_OUT_FAMILIES] if args.held_out_forms else None)
    cases = hack_cases(rows, names)
    scorer = load_scorer(model_dir, max_length=args.max_length, batch_size=args.batch_size)
    started = time.time()
    score = score_once(scorer, [pair for items in cases.values() for c in items for pair in ((c[0], c[1]), (c[2], c[3]))])
    families = {}
    for name, items in cases.items():
        if not items:
            continue
        good = [score[_key(c[0], c[1])] for c in items]
        hacked = [score[_key(c[2], c[3])] for c in items]
        families[name] = family_report(good, hacked)
    return {"model": str(args.model), "model_dir": str(model_dir), "data": str(args.data), "split": args.split,
            "prompts": len(rows), "families": families, "seconds": round(time.time() - started, 1)}


def format_hacks(report: dict) -> str:
    lines = [f"reward model {report['model']} on {report['prompts']} {report['split']}-split prompts of {report['data']}",
             "", f"  {'family':<18} {'cases':>6} {'hack preferred':>15} {'mean margin good - hack':>24}"]
    for name, fam in report["families"].items():
        lines.append(f"  {name:<18} {fam['pairs']:>6} {100 * fam['hack_preferred']:>14.1f}% {fam['mean_margin']:>24.3f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    check_args(args, models=("model",), inputs=("data",), outputs=("output",))
    report = evaluate(args)
    print(format_hacks(report))
    if args.output:
        write_report(report, args.output)
    return 0
