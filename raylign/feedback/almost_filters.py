"""ALMoST's rules as pure functions: near-duplicate prompts (ROUGE-L), bad responses, the
configuration rubric, and the length heuristic that turns ranked responses into pairs.

Reference: Kim et al. 2023, "Aligning Large Language Models through Synthetic Feedback".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_NUMBERING = re.compile(r"^\s*(\d+[.)]|[-*•])\s*")
# A response must not write the next turn or the next dialogue of the few-shot transcript.
_TURN_MARKERS = ("\nHuman:", "\nAssistant:", "\n-----", "Human:", "-----")


def rouge_tokens(text: str) -> list[str]:
    """Lower-cased alphanumeric words (the `rouge-score` package's tokenizer, without stemming)."""
    return _NON_ALNUM.sub(" ", text.lower()).split()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row at a time)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1: LCS over the two token counts, harmonic mean of precision and recall."""
    c, r = rouge_tokens(candidate), rouge_tokens(reference)
    if not c or not r:
        return 0.0
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def is_near_duplicate(candidate: str, pool: Sequence[str], threshold: float = 0.5) -> bool:
    """ALMoST keeps a generated prompt only if its ROUGE-L with every known prompt is below 0.5."""
    return any(rouge_l(candidate, known) >= threshold for known in pool)


def clean_generated_prompt(text: str) -> str:
    """The first line of a completion, without list numbering or quotes."""
    line = text.strip().split("\n", 1)[0] if text.strip() else ""
    line = _NUMBERING.sub("", line).strip()
    return line.strip('"').strip()


def bad_prompt_reason(prompt: str, min_words: int = 3, max_words: int = 64) -> str | None:
    words = len(prompt.split())
    if words < min_words:
        return "too_short"
    if words > max_words:
        return "too_long"
    if any(marker in prompt for marker in ("Human:", "Assistant:", "###")):
        return "template_leak"
    return None


def cut_response(text: str) -> str:
    """A few-shot completion up to where the model starts the next turn or dialogue."""
    end = len(text)
    for marker in _TURN_MARKERS:
        index = text.find(marker)
        if index != -1:
            end = min(end, index)
    return text[:end].strip()


def bad_response_reason(response: str, min_words: int = 5) -> str | None:
    """ALMoST's bad-response rules; None when the response may enter a comparison."""
    text = response.strip()
    if len(text.split()) < min_words:
        return "too_short"
    if text.endswith(("?", ":")):
        return "ends_with_question_or_colon"
    if "Human:" in text or "Assistant:" in text:
        return "contains_turn_marker"
    return None


@dataclass(frozen=True)
class ConfigRank:
    """What the rubric reads of a response configuration: bigger is better on every axis."""

    name: str
    size: float  # model size (parameters, or any number that orders the models)
    shots: int  # demonstrations in the prompt
    quality: float  # demonstration quality (Faithful > HHH)


AXES = ("size", "quality", "shots")


def dominates(a: ConfigRank, b: ConfigRank, rubric=None) -> bool:
    """The rubric: with rule `dominance` (the default) a beats b when it is no worse on every
    axis (size, shots, demonstration quality, or the rubric's `axes`) and better on one, and
    configurations it cannot order make no pair; with rule `priority` the first axis of
    `axes` on which they differ decides."""
    axes = list(getattr(rubric, "axes", AXES))
    mine, theirs = [getattr(a, x) for x in axes], [getattr(b, x) for x in axes]
    if getattr(rubric, "rule", "dominance") == "priority":
        return mine > theirs
    return all(x >= y for x, y in zip(mine, theirs)) and any(x > y for x, y in zip(mine, theirs))


def rank_configs(configs: Sequence[ConfigRank], rubric=None) -> list[ConfigRank]:
    """Best first: by how many configurations each beats, then by (size, quality, shots)."""
    wins = {c.name: sum(dominates(c, other, rubric) for other in configs) for c in configs}
    return sorted(configs, key=lambda c: (-wins[c.name], -c.size, -c.quality, -c.shots, c.name))


def length_stats(responses: Sequence[str]) -> tuple[float, float]:
    """Mean and (population) standard deviation of the word counts of one prompt's responses."""
    lengths = [len(r.split()) for r in responses]
    if not lengths:
        return 0.0, 0.0
    mu = sum(lengths) / len(lengths)
    return mu, math.sqrt(sum((x - mu) ** 2 for x in lengths) / len(lengths))


def fails_length_heuristic(chosen: str, rejected: str, mu: float, sigma: float) -> bool:
    """Skip a pair whose chosen response is both shorter than the rejected one and short for
    this prompt (under mu - sigma/2): the rubric is least trustworthy there."""
    c, r = len(chosen.split()), len(rejected.split())
    return c < r and c < mu - sigma / 2


def make_comparisons(
    responses: dict[str, str], configs: Sequence[ConfigRank], min_words: int = 5, length_heuristic: bool = True,
    rubric=None,
) -> tuple[list[dict], dict]:
    """One prompt's responses (config name -> text) walked into (chosen, rejected) pairs.

    Bad responses are dropped first; every ordered pair of surviving configurations the
    rubric can order makes a pair, best configuration first. Returns the pairs and counts of
    what was dropped and why.
    """
    stats: dict[str, int] = {}
    good = {}
    for name, text in responses.items():
        reason = bad_response_reason(text, min_words)
        if reason:
            stats[f"bad_{reason}"] = stats.get(f"bad_{reason}", 0) + 1
        else:
            good[name] = text.strip()
    mu, sigma = length_stats(list(good.values()))
    ranked = [c for c in rank_configs(configs, rubric) if c.name in good]
    pairs = []
    for i, better in enumerate(ranked):
        for worse in ranked[i + 1 :]:
            if not dominates(better, worse, rubric):
                continue
            chosen, rejected = good[better.name], good[worse.name]
            if chosen == rejected:
                stats["identical"] = stats.get("identical", 0) + 1
                continue
            if length_heuristic and fails_length_heuristic(chosen, rejected, mu, sigma):
                stats["length_filtered"] = stats.get("length_filtered", 0) + 1
                continue
            pairs.append({"chosen": chosen, "rejected": rejected, "chosen_config": better.name, "rejected_config": worse.name})
    return pairs, stats
