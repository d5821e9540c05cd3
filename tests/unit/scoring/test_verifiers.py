"""Verifiable rewards: extractors, checks and their weighted sum, against hand values."""

from fractions import Fraction

import pytest
from pydantic import ValidationError

from raylign.scoring.verifiers import EXTRACTORS, VerifierConfig, parse_number, verify


@pytest.mark.parametrize("name,response,expected", [
    ("gsm8k", "She pays 3 * 4 = 12.\n#### 12", "12"),
    ("gsm8k", "#### 5\nno wait\n#### 1,200", "1,200"),
    ("gsm8k", "The answer is 12.", None),
    ("boxed", r"so $x = \boxed{\frac{1}{2}}$ and \boxed{7}", "7"),
    ("boxed", r"\boxed{3 + {4}}", "3 + {4}"),
    ("boxed", r"cut off \boxed{12", None),
    ("last_number", "21 + 76 = 97.", "97"),
    ("last_number", "It costs $1,234.50 in all", "$1,234.50"),
    ("last_number", "no digits here", None),
    ("auto", "#### 8 after 9", "8 after 9"),
    ("auto", r"\boxed{4} then 5", "4"),
    ("auto", "3 then 5", "5"),
])
def test_extractors(name, response, expected):
    assert EXTRACTORS.pick(name)(response) == expected


@pytest.mark.parametrize("text,expected", [
    ("1,234", Fraction(1234)), ("$5", Fraction(5)), ("-3.50", Fraction(-7, 2)), ("7/2", Fraction(7, 2)),
    ("12.", Fraction(12)), ("x = 4 apples", Fraction(4)), ("none", None), (None, None), ("3/0", None),
])
def test_parse_number(text, expected):
    assert parse_number(text) == expected


def config(**checks) -> VerifierConfig:
    return VerifierConfig(extract="auto", checks=checks)


@pytest.mark.parametrize("response,answer,score", [
    ("21 + 76 = 97", "97", 1.0),
    ("The answer is 97.0.", "97", 1.0),
    ("97 is close to 98", "97", 0.0),  # the last number is the answer
    ("#### 1,200", "1200", 1.0),
    ("I don't know", "3", 0.0),
])
def test_numeric_check(response, answer, score):
    assert verify(response, answer, config(numeric=1.0)) == score


def test_weighted_checks_add_up():
    weights = config(numeric=1.0, number_only=0.25)
    assert verify("97", "97", weights) == 1.25
    assert verify("It is 97.", "97", weights) == 1.0
    assert verify("98", "97", weights) == 0.25
    assert verify(" 97. ", "97", weights) == 1.25


def test_exact_and_format_checks():
    assert verify("The capital is Paris.", "paris", VerifierConfig(extract="last_number", checks={"exact": 1})) == 0.0
    assert verify("#### Paris.", " paris", VerifierConfig(extract="gsm8k", checks={"exact": 1})) == 1.0
    assert verify("work\n#### 42", "1", config(gsm8k_format=1.0)) == 1.0
    assert verify("42", "1", config(gsm8k_format=1.0)) == 0.0
    assert verify(r"\boxed{1}", "2", config(boxed_format=0.5)) == 0.5


def test_custom_check_by_module_path():
    weights = VerifierConfig(checks={"tests.unit.scoring.test_verifiers:longer_than_answer": 2.0})
    assert verify("12345", "12", weights) == 2.0
    assert verify("1", "12", weights) == 0.0


def longer_than_answer(response: str, answer: str, extracted: str | None) -> float:
    return float(len(response) > len(answer))


def test_unknown_check_or_extractor_is_a_clear_error():
    with pytest.raises(ValidationError, match="numerc"):
        VerifierConfig(checks={"numerc": 1.0})
    with pytest.raises(ValidationError, match="extract"):
        VerifierConfig(extract="first_number")
    with pytest.raises(ValidationError, match="at least one check"):
        VerifierConfig(checks={})
