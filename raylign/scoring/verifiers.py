"""Verifiable rewards: a response's final answer extracted and checked against the known one.

Pure functions, by name: *extractors* pull the final answer out of a response (GSM8K's
`#### N`, LaTeX `\\boxed{...}`, the last number), *checks* score it against the row's
`answer` (numeric equality, exact match) or the response's form (only a number, a `####` line),
each returning a score in [0, 1]. A verifier is a weighted sum of checks
(`raylign.scoring.verifier_source` runs them as a reward source, with a time limit per call).
A custom check is a registered function or any `module:callable` taking (response, answer).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Literal

from pydantic import Field, field_validator

from raylign.config import Registry, StrictModel, load_callable

EXTRACTORS = Registry("answer extractor")  # (response) -> the final answer as text, or None
CHECKS = Registry("verifier check")  # (response, answer, extracted) -> score in [0, 1]

_NUMBER = re.compile(r"[-+]?\$?\s?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_GSM8K = re.compile(r"####\s*([^\n]*)")


def _boxed_spans(text: str) -> list[str]:
    """Contents of every `\\boxed{...}`, braces balanced."""
    spans, start = [], 0
    while (index := text.find("\\boxed{", start)) != -1:
        depth, position = 0, index + len("\\boxed")
        for position in range(index + len("\\boxed"), len(text)):
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            if depth == 0:
                break
        if depth:
            break  # unbalanced: the response was cut
        spans.append(text[index + len("\\boxed{"): position])
        start = position + 1
    return spans


@EXTRACTORS.register("gsm8k")
def after_hashes(response: str) -> str | None:
    """The text after the last `####` (GSM8K's answer line)."""
    found = _GSM8K.findall(response)
    return found[-1].strip() if found else None


@EXTRACTORS.register("boxed")
def last_boxed(response: str) -> str | None:
    spans = _boxed_spans(response)
    return spans[-1].strip() if spans else None


@EXTRACTORS.register("last_number")
def last_number(response: str) -> str | None:
    found = _NUMBER.findall(response)
    return found[-1].strip() if found else None


@EXTRACTORS.register("auto")
def first_form_found(response: str) -> str | None:
    """`####`, else `\\boxed{}`, else the last number: what a model asked for any of them writes."""
    for extractor in (after_hashes, last_boxed, last_number):
        found = extractor(response)
        if found:
            return found
    return None


def parse_number(text: str | None) -> Fraction | None:
    """A number written the usual ways (`1,234`, `$5`, `-3.50`, `7/2`, `12.`) as an exact fraction."""
    if text is None:
        return None
    match = _NUMBER.search(text)
    if not match:
        return None
    cleaned = match.group(0).replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        if "/" in cleaned:
            numerator, denominator = cleaned.split("/")
            return Fraction(int(float(numerator)), int(denominator)) if int(denominator) else None
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def normalize_text(text: str | None) -> str:
    return " ".join((text or "").lower().strip().strip(".").split())


@CHECKS.register("numeric")
def numeric_match(response: str, answer: str, extracted: str | None) -> float:
    """1 when the extracted answer equals the known number (exactly, or within 1e-6 relative)."""
    got, want = parse_number(extracted), parse_number(answer)
    if got is None or want is None:
        return 0.0
    return float(got == want or math.isclose(float(got), float(want), rel_tol=1e-6))


@CHECKS.register("exact")
def exact_match(response: str, answer: str, extracted: str | None) -> float:
    """1 when the extracted answer equals the known one as text (case, spaces, a final period aside)."""
    return float(extracted is not None and normalize_text(extracted) == normalize_text(answer))


@CHECKS.register("number_only")
def number_only(response: str, answer: str, extracted: str | None) -> float:
    """1 when the whole response is one number (what "Reply with only the number." asks for)."""
    return float(bool(re.fullmatch(r"\s*" + _NUMBER.pattern + r"\s*\.?\s*", response)))


@CHECKS.register("gsm8k_format")
def has_answer_line(response: str, answer: str, extracted: str | None) -> float:
    """1 when the response ends its reasoning with a `#### <number>` line."""
    return float(parse_number(after_hashes(response)) is not None)


@CHECKS.register("boxed_format")
def has_boxed(response: str, answer: str, extracted: str | None) -> float:
    return float(bool(_boxed_spans(response)))


class VerifierConfig(StrictModel):
    """`reward.verifier` (with `reward.kind: verifier`): how a response's answer is checked."""

    extract: EXTRACTORS.setting = "auto"  # gsm8k (####), boxed, last_number, auto (the first found)
    # check -> weight; a check is a registered name (numeric, exact, number_only, gsm8k_format,
    # boxed_format) or "module:callable" taking (response, answer, extracted) -> float
    checks: dict[str, float] = {"numeric": 1.0}
    answer_field: str = "answer"  # the prompt row's field with the known answer
    timeout_s: float = Field(2.0, gt=0)  # per response; a check that takes longer scores as an error
    on_error: Literal["zero", "raise"] = "zero"  # a check that raises or times out: reward 0, or end the run
    rows_per_task: int = Field(64, ge=1)  # responses per Ray task (tasks run in parallel)
    num_cpus: float = Field(0.05, ge=0.0)  # per verifier task

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, checks: dict[str, float]) -> dict[str, float]:
        if not checks:
            raise ValueError("needs at least one check")
        for name in checks:
            if ":" not in name:
                CHECKS.pick(name)
        return checks


def check_function(name: str):
    """A check by registered name or `module:callable`."""
    if ":" in name:
        return load_callable(name)
    return CHECKS.pick(name)


def verify(response: str, answer: str, config: VerifierConfig) -> float:
    """The weighted sum of the configured checks on one response."""
    extracted = EXTRACTORS.pick(config.extract)(response)
    return sum(weight * float(check_function(name)(response, answer, extracted))
               for name, weight in config.checks.items())
