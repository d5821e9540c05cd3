"""Degenerate repetition, measured on a response's words (no tokenizer, so any reward source
or outputs file can use it)."""

from __future__ import annotations


def repeated_ngram_fraction(text: str, n: int = 4) -> float:
    """seq-rep-n (Welleck et al., 2019): the share of a response's word n-grams that repeat an
    earlier one, 1 - unique / total; 0 below n + 1 words. Degenerate repetition, the usual
    shape of a reward hack at a token limit ("I'm so sorry." six times), shows here while
    the reference perplexity of repeated text can stay low."""
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0
