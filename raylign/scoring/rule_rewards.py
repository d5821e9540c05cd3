"""Rule-based rewards usable as `reward.kind: function` (cheap, deterministic).

Handy for smoke tests, benchmarks that should measure the engine rather than a
reward model, and as a template for your own `module:callable` reward.
"""

from __future__ import annotations


def concise(rows: list[dict], target_words: int = 30) -> list[float]:
    """Prefer answers of about `target_words` words; penalise empty or rambling ones."""
    scores = []
    for row in rows:
        words = len(row["response"].split())
        scores.append(-abs(words - target_words) / target_words)
    return scores
