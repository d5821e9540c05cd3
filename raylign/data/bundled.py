"""Data that ships inside the package, so every default runs with no file given."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets"
# 300 HH-RLHF harmless-base pairs: the default prompts of the online recipes and `smoke`, the
# default pairs of `train rm`, and the tests' data
BUNDLED_HH = ASSETS / "hh_rlhf_harmless_sample.jsonl.gz"
