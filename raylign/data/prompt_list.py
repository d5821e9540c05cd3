"""Prompt lists for batch inference and ranking: a prompt file read through its adapter into rows
that keep AlpacaEval's `instruction`, `input` and `dataset` (what outputs files are keyed by), one
seeded split of them at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from raylign.data.adapters import ADAPTERS, FORMATS, detect_format
from raylign.data.config import DataConfig
from raylign.data.readers import DataError, iter_records


class PromptListConfig(DataConfig):
    # keep only prompts whose seeded hash falls in this split (the same split as `raylign train rm`), so a
    # study collects preferences on train instructions and evaluates on instructions its models never saw
    split: Literal["all", "train", "validation", "test"] = "all"
    validation_fraction: float = Field(0.0, ge=0.0, lt=1.0)  # generation has no validation pass: none by default


def read_prompts(config: PromptListConfig) -> list[dict]:
    """Prompt rows (adapter-made `prompt`/`messages`) that keep AlpacaEval's `instruction`, `input`, `dataset`."""
    if config.format not in FORMATS:
        raise DataError(f"unknown data format '{config.format}' (choose from {', '.join(FORMATS)})")
    from raylign.data.splits import split_of

    rows, adapter, seen = [], None, set()
    for rec in iter_records(config.path):
        if adapter is None:
            name = detect_format(rec) if config.format == "auto" else config.format
            adapter = ADAPTERS.get((name, "prompt"))
            if adapter is None:
                raise DataError(f"{config.path}: format '{name}' has no prompts")
        row = adapter(rec)
        row["instruction"] = rec.data.get("instruction") or row["prompt"]
        row["input"] = rec.data.get("input") or ""
        row["dataset"] = rec.data.get("dataset") or Path(config.path).name
        if config.split != "all" and split_of(row["prompt_id"], config.test_fraction, config.validation_fraction,
                                              config.split_seed) != config.split:
            continue
        if row["prompt_id"] in seen:  # a file of pairs repeats its prompts: each is answered once
            continue
        seen.add(row["prompt_id"])
        rows.append(row)
        if config.limit is not None and len(rows) >= config.limit:
            break
    if not rows:
        raise DataError(f"{config.path}: no prompts" + (f" in split '{config.split}'" if config.split != "all" else ""))
    return rows
