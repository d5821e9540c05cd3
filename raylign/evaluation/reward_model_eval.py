"""`raylign eval rm`: accuracy, margins, calibration and soft-label agreement of a reward model
on any pairwise file the adapters read.

    raylign eval rm --model runs/rm_hh --data ../shared/data/hh_rlhf_harmless.jsonl.gz \
        --on-error skip --split test --output runs/rm_hh/eval_test.json
"""

from __future__ import annotations

import argparse
import time

from raylign.data.adapters import FORMATS, human_probability, load_rows
from raylign.data.readers import DataError
from raylign.data.splits import SPLITS, select_split
from raylign.evaluation.reports import write_report
from raylign.models.chat import PROMPT_FORMATS
from raylign.preflight import check_args


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign eval rm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="reward-model directory or shipped name (hh-rm-smollm2)")
    parser.add_argument("--data", required=True, help="pairwise file: HH-RLHF, AlpacaEval pairs, {prompt,chosen,rejected}")
    parser.add_argument("--format", default="auto", choices=FORMATS)
    parser.add_argument("--limit", type=int, default=None, help="read at most N pairs (after the split)")
    parser.add_argument("--on-error", default="raise", choices=["raise", "skip"], help="skip malformed rows")
    parser.add_argument("--split", default="all", choices=SPLITS, help="the training recipe's hash split to score")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=None, help="default: the model's training max_length, else 512")
    parser.add_argument("--prompt-format", default=None, choices=PROMPT_FORMATS,
                        help="text form of the pairs; default: the one the model was trained on (raylign_rm.json)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--bins", type=int, default=10, help="calibration bins")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--output", help="write the report as JSON here")
    return parser


def evaluate(args: argparse.Namespace) -> dict:
    from raylign.evaluation.reward_model_metrics import pairwise_report
    from raylign.models.registry import resolve_model
    from raylign.scoring.ensemble import is_ensemble_dir, load_scorer
    from raylign.scoring.reward_model import RewardScorer, trained_max_length

    model_dir = resolve_model(args.model)
    max_length = args.max_length or trained_max_length(model_dir)
    rows = load_rows(args.data, "preference", args.format, None, args.on_error)
    rows = select_split(rows, args.split, args.test_fraction, args.validation_fraction, args.split_seed)
    if args.limit is not None:
        rows = rows[: args.limit]
    if not rows:
        raise DataError(f"{args.data}: no pairs in split '{args.split}'")
    if args.prompt_format and is_ensemble_dir(model_dir):
        raise ValueError("--prompt-format applies to one reward model; an ensemble's members use their own")
    scorer = (load_scorer(model_dir, max_length, args.batch_size, args.dtype) if is_ensemble_dir(model_dir) else
              RewardScorer(model_dir, max_length=max_length, batch_size=args.batch_size, dtype=args.dtype,
                           prompt_format=args.prompt_format))
    started = time.time()
    scores = scorer.score(rows + rows, [r["chosen"] for r in rows] + [r["rejected"] for r in rows])
    chosen, rejected = scores[: len(rows)], scores[len(rows) :]
    report = pairwise_report(chosen, rejected, [human_probability(r) for r in rows], args.bins)
    report.update(
        model=str(args.model), model_dir=str(model_dir), data=str(args.data), split=args.split,
        max_length=max_length, prompt_format=getattr(scorer, "prompt_format", "per member"), seconds=round(time.time() - started, 1),
    )
    return report


def main(argv: list[str]) -> int:
    from raylign.evaluation.reward_model_metrics import format_report

    args = _parser().parse_args(argv)
    check_args(args, models=("model",), inputs=("data",), outputs=("output",))
    report = evaluate(args)
    print(format_report(report, f"reward model {args.model} on {args.data} (split: {args.split}, "
                                f"max_length {report['max_length']}, text: {report['prompt_format']})"))
    if args.output:
        write_report(report, args.output)
    return 0
