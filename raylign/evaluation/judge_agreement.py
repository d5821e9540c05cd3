"""`raylign eval judges`: how well pairwise annotators agree with reference judgments.

    raylign eval judges --annotator rm:alpaca-rm-smollm2 --annotator rm:hh-rm-smollm2 \
        --data ../shared/data/alpaca_eval_gpt4_pairs.jsonl.gz --split test --limit 600

Per annotator (outputs shown in the file's order, no noise):
- agreement: the annotator's side matches the reference's (its ties count 1/2);
  reference ties (1.5) are left out;
- confident agreement: the same on pairs whose reference is confident,
  |preference - 1.5| >= --confident (0.4: the reference gives the winner >= 90%);
- soft agreement: p_a*p_r + (1-p_a)*(1-p_r) with p = preference - 1;
- swap consistency: the annotator picks the same output when the two are shown in the
  other order (an annotator that scores each output alone is consistent by construction);
- first shown: how often it prefers the output shown first (position bias; 50% is none);
- both orders: agreement of the mean of the two orders' judgments (a pure position bias
  cancels to a tie, which counts 1/2): what is left of the judge once its bias is removed.
`--split test` keeps the pairs whose instruction the training recipe's seeded hash split
(`jobs/rm_alpaca.yaml`: test_fraction 0.2, seed 0) held out.

Human preference files (HH-RLHF, `{prompt, chosen, rejected}`, any format the preference
loaders read) work too: the human's choice is the reference, and which answer is shown
first is a seeded coin per prompt, so a judge's position bias cannot pass for agreement.
This is how a second judge for `raylign eval compare` is checked on the prompts it judges.
"""

from __future__ import annotations

import argparse
import hashlib
import time

from raylign.data.adapters import alpaca_prompt, prompt_id
from raylign.data.readers import DataError, iter_records
from raylign.evaluation.reports import write_report
from raylign.feedback.config import check_annotators
from raylign.feedback.pool import hard_label
from raylign.preflight import check_args

DEFAULT_DATA = "../shared/data/alpaca_eval_gpt4_pairs.jsonl.gz"


def read_reference_pairs(path, split: str = "all", test_fraction: float = 0.2, validation_fraction: float = 0.08,
                         seed: int = 0, limit: int | None = None, on_error: str = "raise") -> list[dict]:
    """Pairs with a reference `preference` in [1, 2], optionally one side of the instruction split."""
    from raylign.data.splits import SPLITS, split_of

    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")
    first = next(iter(iter_records(path, limit=1)), None)
    if first is not None and "instruction" not in first.data:
        return _human_preference_pairs(path, split, test_fraction, validation_fraction, seed, limit, on_error)
    pairs = []
    for rec in iter_records(path):
        row = {"instruction": rec.field("instruction"), "input": rec.field("input", optional=True) or "",
               "output_1": rec.field("output_1"), "output_2": rec.field("output_2"),
               "preference": float(rec.field("preference", (int, float)))}
        if not 1.0 <= row["preference"] <= 2.0:
            raise DataError(f"{rec.source}: field 'preference' must be in [1, 2], got {row['preference']}")
        for extra in ("generator_1", "generator_2"):
            if extra in rec.data:
                row[extra] = rec.data[extra]
        pid = prompt_id(alpaca_prompt(row["instruction"], row["input"] or None))
        if split == "all" or split_of(pid, test_fraction, validation_fraction, seed) == split:
            pairs.append(row)
            if limit is not None and len(pairs) >= limit:
                break
    if not pairs:
        raise DataError(f"{path}: no reference pairs in split '{split}'")
    return pairs


def chosen_shown_first(prompt_id: str) -> bool:
    """A seeded coin per prompt, independent of the split's hash."""
    return hashlib.sha1(f"shown-order:{prompt_id}".encode()).digest()[0] % 2 == 0


def _human_preference_pairs(path, split: str, test_fraction: float, validation_fraction: float, seed: int,
                            limit: int | None, on_error: str) -> list[dict]:
    """Chosen / rejected rows as reference pairs, split by the same prompt hash as the
    recipes (`raylign train rm|dpo`, `eval compare`), so `--split test` is their test split."""
    from raylign.data.adapters import load_rows
    from raylign.data.splits import select_split

    rows = select_split(load_rows(path, "preference", "auto", on_error=on_error), split, test_fraction,
                        validation_fraction, seed)
    pairs = []
    for row in rows[:limit] if limit is not None else rows:
        first = chosen_shown_first(row["prompt_id"])
        pairs.append({"instruction": row["prompt"], "input": "",
                      "output_1": row["chosen"] if first else row["rejected"],
                      "output_2": row["rejected"] if first else row["chosen"],
                      "preference": 1.0 if first else 2.0})
    if not pairs:
        raise DataError(f"{path}: no preference pairs in split '{split}'")
    return pairs


def _side_match(pred: float, ref: float) -> float:
    mine = hard_label(pred)
    return 0.5 if mine == 1.5 else float(mine == hard_label(ref))


def agreement_metrics(pred: list[float], ref: list[float], swapped: list[float] | None = None,
                      confident: float = 0.4) -> dict:
    """Agreement of predicted with reference preferences (both in [1, 2]); `swapped` holds
    the predictions for the same pairs shown in the other order (in that order's frame)."""
    decided = [(p, r) for p, r in zip(pred, ref) if r != 1.5]
    sure = [(p, r) for p, r in decided if abs(r - 1.5) >= confident]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
    report = {
        "pairs": len(pred),
        "agreement": mean([_side_match(p, r) for p, r in decided]),
        "confident_pairs": len(sure),
        "confident_agreement": mean([_side_match(p, r) for p, r in sure]),
        "soft_agreement": mean([(p - 1) * (r - 1) + (2 - p) * (2 - r) for p, r in zip(pred, ref)]),
        "first_shown": mean([1.0 if p < 1.5 else 0.0 if p > 1.5 else 0.5 for p in pred]),
        "swap_consistency": None,
    }
    if swapped is not None:
        report["swap_consistency"] = mean([float(same_side(p, s)) for p, s in zip(pred, swapped)])
        # Both orders averaged (what `eval compare` uses for an order-dependent judge): a pure
        # position bias cancels to a tie, so only what the judge sees in the outputs is left.
        both = [both_orders(p, s) for p, s in zip(pred, swapped)]
        report["both_orders_agreement"] = mean([_side_match(b, r) for b, r in zip(both, ref) if r != 1.5])
    return report


def both_orders(shown: float, swapped: float) -> float:
    """One preference from a judgment in the shown order and one in the swapped order
    (in that order's frame): their mean after swapping the second back."""
    return (shown + 3.0 - swapped) / 2.0


def same_side(shown: float, swapped: float) -> bool:
    """Whether the judge picked the same output in the shown and in the swapped order."""
    return hard_label(shown) == hard_label(3.0 - swapped)


def _annotate(annotator, pairs, cache, use_ray_data: bool) -> list[float]:
    from raylign.feedback.job import annotate_rows
    from raylign.feedback.pool import AnnotatorPool, PoolConfig

    pool = AnnotatorPool([annotator], PoolConfig(swap_order=False, training=False), cache)
    return [r["preference"] for r in annotate_rows(pairs, pool, use_ray_data=use_ray_data)]


def judge_both_orders(annotator, pairs: list[dict], cache=None,
                      use_ray_data: bool = True) -> tuple[list[float], list[float] | None]:
    """(preferences in the shown order, preferences with the outputs swapped, in that order's
    frame); the second is None for an annotator that scores each output alone (a reward
    model), which cannot depend on the order. The annotator must be prepared."""
    from raylign.feedback.annotators import RewardAnnotator

    shown = _annotate(annotator, pairs, cache, use_ray_data)
    if isinstance(annotator, RewardAnnotator):
        return shown, None
    flipped = [{**p, "output_1": p["output_2"], "output_2": p["output_1"]} for p in pairs]
    return shown, _annotate(annotator, flipped, cache, use_ray_data)


def evaluate_annotator(annotator, pairs: list[dict], cache=None, use_ray_data: bool = True,
                       confident: float = 0.4, by: str | None = None) -> dict:
    started = time.time()
    shown = [{k: v for k, v in p.items() if k != "preference"} for p in pairs]
    pred, swapped = judge_both_orders(annotator, shown, cache, use_ray_data)
    order_free = swapped is None
    ref = [p["preference"] for p in pairs]
    report = {"annotator": annotator.name, **agreement_metrics(pred, ref, swapped, confident)}
    if order_free:
        report["swap_consistency"] = 1.0
        report["order_free"] = True
    if by:
        groups: dict = {}
        for p, r, row in zip(pred, ref, pairs):
            groups.setdefault(str(row.get(by)), ([], []))
            groups[str(row.get(by))][0].append(p)
            groups[str(row.get(by))][1].append(r)
        report["by_" + by] = {k: agreement_metrics(v[0], v[1], None, confident) for k, v in sorted(groups.items())}
    report["seconds"] = round(time.time() - started, 1)
    return report


def format_table(reports: list[dict], title: str) -> str:
    def pct(x):
        return "   -  " if x is None or x != x else f"{100 * x:5.1f}%"

    head = (f"{'annotator':<34} {'pairs':>6} {'agree':>7} {'confident (n)':>15} {'soft':>7} {'swap-cons.':>10} "
            f"{'1st shown':>9} {'both orders':>11}")
    lines = [title, head, "-" * len(head)]
    for r in reports:
        swap = pct(r["swap_consistency"]) + ("*" if r.get("order_free") else " ")
        lines.append(f"{r['annotator'][:34]:<34} {r['pairs']:>6} {pct(r['agreement']):>7} "
                     f"{pct(r['confident_agreement']):>7} ({r['confident_pairs']:>5}) {pct(r['soft_agreement']):>7} "
                     f"{swap:>10} {pct(r['first_shown']):>9} {pct(r.get('both_orders_agreement')):>11}")
    if any(r.get("order_free") for r in reports):
        lines.append("* scores each output alone, so consistent under swapping by construction")
    for r in reports:
        for key in [k for k in r if k.startswith("by_")]:
            lines.append(f"\n{r['annotator']} {key.replace('_', ' ', 1)}:")
            for name, sub in r[key].items():
                lines.append(f"  {name[:40]:<40} {sub['pairs']:>5} pairs  agree {pct(sub['agreement'])}  "
                             f"confident {pct(sub['confident_agreement'])}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign eval judges", description=__doc__.split("\n\n")[0])
    parser.add_argument("--annotator", action="append", required=True, help="annotator spec (see raylign annotate)")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        help="pairs with a reference preference in [1, 2], or human chosen/rejected pairs (HH-RLHF)")
    parser.add_argument("--on-error", default="raise", choices=["raise", "skip"],
                        help="chosen/rejected files: skip malformed rows (logged) instead of failing")
    parser.add_argument("--split", default="all", choices=["all", "train", "validation", "test"])
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--validation-fraction", type=float, default=0.08)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="the first N pairs of the split")
    parser.add_argument("--confident", type=float, default=0.4, help="|preference - 1.5| of a confident reference")
    parser.add_argument("--by", default=None, help="also report per value of this field (e.g. generator_2)")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--in-process", action="store_true", help="annotate in this process, not as a Ray Data job")
    parser.add_argument("--output", help="write the reports as JSON here")
    return parser


def main(argv: list[str]) -> int:
    from raylign.feedback.cache import AnnotationCache
    from raylign.feedback.config import build_annotator, parse_spec
    from raylign.feedback.job import quiet_ray_data
    from raylign.runtime import init_ray

    args = _parser().parse_args(argv)
    check_args(args, inputs=("data",), outputs=("output",))
    check_annotators(args.annotator)
    pairs = read_reference_pairs(args.data, args.split, args.test_fraction, args.validation_fraction,
                                 args.split_seed, args.limit, args.on_error)
    cache = None if args.no_cache else AnnotationCache(args.cache_dir)
    init_ray(None, quiet=True)
    quiet_ray_data()
    reports = []
    for spec in args.annotator:
        annotator = build_annotator(parse_spec(spec))
        annotator.prepare()
        try:
            reports.append(evaluate_annotator(annotator, pairs, cache, not args.in_process, args.confident, args.by))
        finally:
            annotator.close()
    print(format_table(reports, f"agreement with the reference in {args.data} (split {args.split}, {len(pairs)} pairs)"))
    if args.output:
        write_report(reports, args.output)
    return 0
