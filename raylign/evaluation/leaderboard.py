"""AlpacaEval / AlpacaFarm leaderboard figures from pairwise annotations.

An annotation row is AlpacaEval's: `output_1` by `generator_1` (the baseline),
`output_2` by `generator_2` (the model), `preference` in [1, 2] where 1 means the
baseline's output is better, 2 the model's, 1.5 (or the legacy 0) a tie, and any
value in between a soft preference. Every figure is computed the way the
`alpaca-eval` package computes it, so numbers are comparable with its leaderboards
(tests/unit/test_leaderboard.py checks them against the package itself).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable, Sequence

from raylign.data.readers import DataError, iter_records

COLUMNS = (
    "win_rate",
    "standard_error",
    "length_controlled_winrate",
    "n_wins",
    "n_wins_base",
    "n_draws",
    "n_total",
    "discrete_win_rate",
    "avg_length",
)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _sem(values: Sequence[float]) -> float:
    """Standard error of the mean with ddof=1 (pandas' `sem`)."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = _mean(values)
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(variance / n)


def normalise_preference(value) -> float:
    """A preference as a float in [1, 2], NaN when missing or out of range (legacy 0 = tie)."""
    if value is None:
        return math.nan
    value = float(value)
    if value == 0.0:
        return 1.5
    return value if 1.0 <= value <= 2.0 else math.nan


def winrate(preferences: Iterable) -> dict:
    """Win rate of `generator_2` over the baseline: ties count half, soft preferences their share.

    win_rate = 100 * mean(p - 1) and standard_error = 100 * sem(p - 1) over the rows with
    a valid preference; n_wins / n_wins_base count p - 1 above / below 0.5;
    discrete_win_rate first rounds each preference to 1, 1.5 or 2.
    """
    prefs = [normalise_preference(p) for p in preferences]
    valid = [p - 1.0 for p in prefs if not math.isnan(p)]
    discrete = [(0.5 if p == 1.5 else float(round(p) - 1)) for p in prefs if not math.isnan(p)]
    return {
        "win_rate": 100 * _mean(valid),
        "standard_error": 100 * _sem(valid),
        "n_wins": sum(v > 0.5 for v in valid),
        "n_wins_base": sum(v < 0.5 for v in valid),
        "n_draws": sum(p == 1.5 for p in prefs),
        "n_total": len(valid),
        "discrete_win_rate": 100 * _mean(discrete),
    }


def _continuous_logloss(y_true, y_pred, true_prob, true_sample_weight=None):
    """Log loss against soft labels: each row is duplicated as (y=1, weight p), (y=0, weight 1-p)."""
    import numpy as np

    target = np.where(y_true == 1, true_prob, 1 - true_prob)
    pred = np.clip(y_pred, 1e-15, 1 - 1e-15)
    losses = target * np.log(pred) + (1 - target) * np.log(1 - pred)
    if true_sample_weight is not None:
        losses = losses * true_sample_weight
    return -np.mean(losses)


def _l1_logistic_cv(features, targets, groups, n_splits: int):
    """AlpacaEval's GLM fit: L1 logistic regression over 10 Cs, 5 group folds, soft labels."""
    import numpy as np

    try:
        import sklearn
    except ImportError:
        raise ImportError("the length-controlled win rate needs scikit-learn: pip install 'raylign[eval]'") from None
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    x = np.concatenate([features, features])
    y = np.concatenate([np.ones(len(targets)), np.zeros(len(targets))])
    prob = np.concatenate([targets, 1 - targets])  # soft label of the duplicated row = its weight
    group = np.concatenate([groups, groups])
    kwargs = dict(random_state=123, dual=False, solver="liblinear", n_jobs=None, fit_intercept=False)
    major, minor = (int(p) for p in sklearn.__version__.split(".")[:2])
    if (major, minor) >= (1, 8):
        kwargs.update(l1_ratios=(1.0,), use_legacy_attributes=False)  # == penalty="l1", without warnings
    else:
        kwargs.update(penalty="l1")
    with sklearn.config_context(enable_metadata_routing=True):
        scorer = make_scorer(_continuous_logloss, response_method="predict_proba", greater_is_better=False)
        scorer = scorer.set_score_request(true_sample_weight=True, true_prob=True)
        model = LogisticRegressionCV(cv=GroupKFold(n_splits=n_splits), scoring=scorer, **kwargs)
        model.set_fit_request(sample_weight=True)
        model.fit(x, y, sample_weight=prob, groups=group, true_sample_weight=None, true_prob=prob)
    return model


def length_controlled_winrate(preferences: Sequence, len_model: Sequence[int], len_baseline: Sequence[int], n_splits: int = 5) -> float:
    """The win rate predicted at zero length difference (AlpacaEval's GLM, no instruction term).

    preference - 1 ~ sigmoid(w * tanh(Δlen / std(Δlen)) + b), Δlen = len(baseline) - len(model)
    (output_1 - output_2, as AlpacaEval), fitted as AlpacaEval does (`length_controlled_minimal`:
    AlpacaEval 2.0's default also uses per-instruction difficulties and gamed baselines that it
    downloads from a hub, which raylign never does); reported as 100 * sigmoid(b).
    """
    import numpy as np

    prefs = np.array([normalise_preference(p) for p in preferences], dtype=float)
    delta = np.asarray(len_baseline, dtype=float) - np.asarray(len_model, dtype=float)
    if len(prefs) != len(delta):
        raise ValueError(f"{len(prefs)} preferences but {len(delta)} length pairs")
    std = delta.std(ddof=1) if len(delta) > 1 else 0.0
    keep = ~np.isnan(prefs)
    if keep.sum() < n_splits or not std > 0:
        return math.nan  # too few rows to cross-validate, or no length variation to control for
    features = np.stack([np.tanh(delta / std), np.ones_like(delta)], axis=1)[keep]
    model = _l1_logistic_cv(features, prefs[keep] - 1.0, np.arange(int(keep.sum())), n_splits)
    bias = float(model.coef_.reshape(-1)[-1])
    return 100 * float(np.exp(-np.logaddexp(0, -bias)))


def read_annotations(path) -> list[dict]:
    """AlpacaEval annotations (JSON list or JSONL): the fields the leaderboard needs, checked."""
    rows = []
    for rec in iter_records(path):
        pref = rec.data.get("preference")
        if pref is not None and not isinstance(pref, (int, float)):
            raise DataError(f"{rec.source}: field 'preference' should be a number in [1, 2] or null, got {pref!r}")
        rows.append(
            {
                "instruction": rec.field("instruction", optional=True),
                "output_1": rec.field("output_1"),
                "output_2": rec.field("output_2"),
                "generator_1": rec.field("generator_1"),
                "generator_2": rec.field("generator_2"),
                "preference": None if pref is None else float(pref),
            }
        )
    if not rows:
        raise DataError(f"{path}: no annotations")
    return rows


def leaderboard(annotations: Sequence[dict], length_controlled: bool = True) -> list[dict]:
    """One row per `generator_2` (its annotations against `generator_1`), best LC win rate first.

    avg_length is the mean character length of the model's outputs, truncated to an int as
    AlpacaEval writes it.
    """
    by_model: dict[str, list[dict]] = defaultdict(list)
    for row in annotations:
        by_model[row["generator_2"]].append(row)
    table = []
    for name, rows in by_model.items():
        baselines = sorted({r["generator_1"] for r in rows})
        prefs = [r["preference"] for r in rows]
        entry = {"name": name, "baseline": ", ".join(baselines), **winrate(prefs)}
        entry["avg_length"] = int(_mean([len(r["output_2"]) for r in rows]))
        lc = math.nan
        if length_controlled:
            if name in baselines:
                lc = 50.0  # the baseline against itself, as AlpacaEval reports it
            else:
                lc = length_controlled_winrate(prefs, [len(r["output_2"]) for r in rows], [len(r["output_1"]) for r in rows])
        entry["length_controlled_winrate"] = lc
        table.append(entry)
    key = "length_controlled_winrate" if length_controlled else "win_rate"
    table.sort(key=lambda e: (-(e[key] if not math.isnan(e[key]) else -1), e["name"]))
    return table


def format_table(table: Sequence[dict]) -> str:
    """The leaderboard as fixed-width text, as AlpacaEval prints it."""
    header = f"{'model':<32} {'LC win':>7} {'win':>7} {'s.e.':>6} {'wins':>5} {'draws':>5} {'n':>5} {'avg len':>8}"
    lines = [header, "-" * len(header)]
    for e in table:
        lines.append(
            f"{e['name'][:32]:<32} {e['length_controlled_winrate']:>7.2f} {e['win_rate']:>7.2f} "
            f"{e['standard_error']:>6.2f} {e['n_wins']:>5d} {e['n_draws']:>5d} {e['n_total']:>5d} {e['avg_length']:>8d}"
        )
    return "\n".join(lines)
