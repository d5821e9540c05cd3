"""Turn per-pair reward scores into the numbers `raylign eval rm` reports.

Accuracy counts a tie (r_chosen == r_rejected) as half a correct pair. Agreement with
soft preferences (AlpacaEval's `preference` in [1, 2]) is reported two ways, see
`raylign.scoring.losses.soft_agreement` and `strength_weighted_accuracy`.
"""

from __future__ import annotations

import torch

from raylign.scoring.losses import (
    bradley_terry_loss,
    calibration_bins,
    expected_calibration_error,
    pairwise_correct,
    soft_agreement,
    strength_weighted_accuracy,
)


def pairwise_report(chosen: list[float], rejected: list[float], p_human: list[float], num_bins: int = 10) -> dict:
    c = torch.tensor(chosen, dtype=torch.float64)
    r = torch.tensor(rejected, dtype=torch.float64)
    p = torch.tensor(p_human, dtype=torch.float64)
    margin = c - r
    correct = pairwise_correct(c, r)
    bins = calibration_bins(margin, correct, num_bins)
    report = {
        "pairs": len(chosen),
        "accuracy": float(correct.mean()),
        "ties": int((margin == 0).sum()),
        "mean_margin": float(margin.mean()),
        "median_margin": float(margin.median()),
        "loss": float(bradley_terry_loss(c, r)),
        "mean_score_chosen": float(c.mean()),
        "mean_score_rejected": float(r.mean()),
        "calibration": bins,
        "expected_calibration_error": expected_calibration_error(bins),
    }
    if bool((p < 1).any()):
        report["soft_labels"] = {
            "mean_p_human": float(p.mean()),
            "agreement": float(soft_agreement(margin, p)),
            "strength_weighted_accuracy": float(strength_weighted_accuracy(correct, p)),
        }
    return report


def format_report(report: dict, title: str) -> str:
    lines = [title, ""]
    rows = [
        ("pairs", f"{report['pairs']}"),
        ("accuracy (ties count 0.5)", f"{report['accuracy']:.4f}"),
        ("ties", f"{report['ties']}"),
        ("mean margin r_c - r_r", f"{report['mean_margin']:.4f}"),
        ("median margin", f"{report['median_margin']:.4f}"),
        ("Bradley-Terry loss", f"{report['loss']:.4f}"),
        ("expected calibration error", f"{report['expected_calibration_error']:.4f}"),
    ]
    soft = report.get("soft_labels")
    if soft:
        rows += [
            ("mean p_human(chosen)", f"{soft['mean_p_human']:.4f}"),
            ("soft agreement", f"{soft['agreement']:.4f}"),
            ("strength-weighted accuracy", f"{soft['strength_weighted_accuracy']:.4f}"),
        ]
    width = max(len(name) for name, _ in rows)
    lines += [f"  {name:<{width}}  {value}" for name, value in rows]
    lines += ["", "  calibration: confidence sigmoid(|margin|) vs accuracy of the preferred response",
              f"  {'bin':<10} {'count':>6} {'mean conf':>10} {'accuracy':>9}"]
    for b in report["calibration"]:
        lines.append(f"  {b['bin']:<10} {b['count']:>6} {b['mean_confidence']:>10.3f} {b['accuracy']:>9.3f}")
    return "\n".join(lines)
