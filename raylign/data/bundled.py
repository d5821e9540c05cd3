"""Data that ships inside the package, so every default runs with no file given."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# 300 HH-RLHF harmless-base pairs: the default prompts of the online recipes and `smoke`, the
# default pairs of `train rm`, and the tests' data
BUNDLED_HH = ASSETS / "hh_rlhf_harmless_sample.jsonl.gz"
# Verifiable tasks (`reward.kind: verifier`): integer arithmetic from `raylign data arithmetic`
# (seed 0: 1500 train problems, 300 test, disjoint by problem), and GSM8K (MIT): 500 problems of
# the train split and 100 of the test split, the first ones of ../shared/data's files
ARITH_TRAIN = ASSETS / "arith_train.jsonl.gz"
ARITH_TEST = ASSETS / "arith_test.jsonl.gz"
ARITH_TEST_HELD_OUT_PHRASINGS = ASSETS / "arith_test_held_out_phrasings.jsonl.gz"  # wordings no train file uses (a test of transfer)
GSM8K_TRAIN = ASSETS / "gsm8k_train_sample.jsonl.gz"
GSM8K_TEST = ASSETS / "gsm8k_test_sample.jsonl.gz"
