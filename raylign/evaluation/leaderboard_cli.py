"""`raylign eval leaderboard`: AlpacaEval-style win rates, from annotations or from model outputs.

    # from existing AlpacaEval annotations (generator_1 = baseline, one row per generator_2)
    raylign eval leaderboard --annotations annotations.json --output runs/leaderboard/results.json
    # from outputs: annotate model vs reference with a reward model, then score
    raylign eval leaderboard --model-outputs runs/bon/outputs.json --reference-outputs ref.json \
        --annotator rm:alpaca-rm-smollm2 --output runs/leaderboard/results.json

Writes results.json, results.csv (AlpacaEval's leaderboard columns) and results.png (a bar
chart); from outputs also results_annotations.json, which `--annotations` reads back.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from raylign.data.readers import DataError, read_outputs
from raylign.evaluation.leaderboard import (
    COLUMNS,
    format_table,
    leaderboard,
    read_annotations,
)
from raylign.feedback.config import check_annotators
from raylign.preflight import check_args

# AlpacaEval ranks instruction following: the helpfulness RM (GPT-4 judgments, 82% held-out agreement),
# not the harmlessness one
DEFAULT_ANNOTATOR = "rm:alpaca-rm-smollm2"


def pair_outputs(model_rows: list[dict], reference_rows: list[dict], reference_path) -> list[dict]:
    """Unannotated AlpacaEval pairs: the reference as output_1 / generator_1, the model as output_2."""
    reference = {(r["instruction"], r["input"]): r for r in reference_rows}
    pairs = []
    for row in model_rows:
        ref = reference.get((row["instruction"], row["input"]))
        if ref is None:
            raise DataError(f"{row['source']}: instruction has no reference output in {reference_path}: {row['instruction'][:80]!r}")
        pairs.append(
            {
                "instruction": row["instruction"],
                "input": row["input"],
                "output_1": ref["output"],
                "output_2": row["output"],
                "generator_1": ref["generator"],
                "generator_2": row["generator"],
            }
        )
    return pairs


def annotate_pairs(pairs: list[dict], specs: list[str], preference: str = "hard") -> list[dict]:
    """The one place the leaderboard meets the annotators (raylign/feedback): a pool of them,
    each pair routed to one by a seeded hash, outputs shown in a seeded order, identical
    outputs a tie; no label noise (this is evaluation). `hard` rounds a soft preference to
    1, 1.5 or 2, as AlpacaFarm's leaderboards count wins."""
    from raylign.feedback.config import build_annotator, parse_spec
    from raylign.feedback.pool import AnnotatorPool, PoolConfig, hard_label

    if any(not spec.startswith(("fn:", "http:", "rm-http:")) for spec in specs):
        from raylign.runtime import init_ray

        init_ray(quiet=True)  # reward-model actors and judges' sampler actors live in the cluster
    pool = AnnotatorPool([build_annotator(parse_spec(spec)) for spec in specs], PoolConfig(training=False)).prepare()
    try:
        rows = pool.annotate(pairs)
    finally:
        pool.close()
    if preference == "hard":
        for row in rows:
            row["preference"] = hard_label(row["preference"])
    return rows


def write_results(table: list[dict], output: Path) -> list[Path]:
    """results.json, results.csv (AlpacaEval's columns, model name first) and results.png."""
    output.parent.mkdir(parents=True, exist_ok=True)
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in e.items()} for e in table]
    output.write_text(json.dumps(clean, indent=2))
    csv_path = output.with_suffix(".csv")
    with csv_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", *COLUMNS, "baseline"])
        for e in clean:
            writer.writerow([e["name"], *(e[c] for c in COLUMNS), e["baseline"]])
    png = output.with_suffix(".png")
    plot_leaderboard(table, png)
    return [output, csv_path, png]


def plot_leaderboard(table: list[dict], path: Path) -> None:
    """Horizontal bars: length-controlled and raw win rate, with the raw rate's standard error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [e["name"] for e in table][::-1]
    lc = [0.0 if math.isnan(e["length_controlled_winrate"]) else e["length_controlled_winrate"] for e in table][::-1]
    raw = [e["win_rate"] for e in table][::-1]
    err = [0.0 if math.isnan(e["standard_error"]) else e["standard_error"] for e in table][::-1]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * len(names)))
    ys = range(len(names))
    ax.barh([y + 0.2 for y in ys], lc, height=0.4, label="length-controlled win rate")
    ax.barh([y - 0.2 for y in ys], raw, height=0.4, xerr=err, label="win rate (± s.e.)")
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.axvline(50, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"% preferred over {table[0]['baseline'] if table else 'baseline'}")
    ax.set_xlim(0, 100)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign eval leaderboard", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--annotations", nargs="+", help="AlpacaEval annotation files (JSON or JSONL)")
    source.add_argument("--model-outputs", nargs="+", help="AlpacaEval outputs of the models to rank")
    parser.add_argument("--reference-outputs", help="AlpacaEval outputs of the baseline (with --model-outputs)")
    parser.add_argument("--annotator", action="append", help="with --model-outputs: an annotator spec, repeatable for a "
                        "pool (rm:NAME_OR_PATH, fn:MODULE:CALLABLE, judge:MODEL, http:URL#MODEL; default rm:alpaca-rm-smollm2, the helpfulness RM trained on GPT-4 judgments)")
    parser.add_argument("--preference", choices=["hard", "soft"], default="hard",
                        help="hard: each pair counts as a win, loss or tie; soft: the annotator's probability")
    parser.add_argument("--no-length-control", action="store_true", help="skip the length-controlled GLM")
    parser.add_argument("--output", default="runs/leaderboard/results.json", help="results JSON (CSV and PNG beside it)")
    return parser


def run(args: argparse.Namespace) -> list[dict]:
    output = Path(args.output)
    if args.annotations:
        annotations = [row for path in args.annotations for row in read_annotations(path)]
    else:
        if not args.reference_outputs:
            raise DataError("--model-outputs needs --reference-outputs (the baseline's AlpacaEval outputs)")
        reference = read_outputs(args.reference_outputs, lists=False)
        pairs = [p for path in args.model_outputs for p in pair_outputs(read_outputs(path, lists=False), reference, args.reference_outputs)]
        annotations = annotate_pairs(pairs, args.annotator or [DEFAULT_ANNOTATOR], args.preference)
        output.parent.mkdir(parents=True, exist_ok=True)
        path = output.with_name(output.stem + "_annotations.json")
        path.write_text(json.dumps(annotations, indent=1))
        print(f"wrote {len(annotations)} annotations to {path}")
    table = leaderboard(annotations, length_controlled=not args.no_length_control)
    print(format_table(table))
    for path in write_results(table, output):
        print(f"wrote {path}")
    return table


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    check_args(args, inputs=("annotations", "model_outputs", "reference_outputs"), outputs=("output",))
    check_annotators(args.annotator or [])
    run(args)
    return 0
