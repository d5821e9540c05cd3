"""The `data` section of every recipe: where the rows come from and which of them to use.

One base class documents the fields both trainers share; the online engine's prompts add the
row kind and the split to train on, the offline trainer's rows add the length limit and an
optional separate test file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raylign.config import InputPath, PromptFormat, StrictModel


class DataConfig(StrictModel):
    path: InputPath = ""  # .jsonl[.gz], .json, .parquet or an HF `save_to_disk` folder
    format: str = "auto"  # any format raylign.data.adapters reads (hh, alpaca, alpaca_eval, cut, rrhf, generic)
    # raise: a malformed row stops the run naming file, line and field; skip: it is dropped (logged)
    on_error: Literal["raise", "skip"] = "raise"
    # at most this many rows: online, of the split trained on; offline, of the file before the
    # split (so the test rows do not depend on it)
    limit: int | None = Field(None, ge=1)
    # The project-wide held-out split (raylign.data.splits): a seeded hash of the prompt id, so
    # one prompt never lands on both sides and every command picks the same test prompts.
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    validation_fraction: float = Field(0.1, ge=0.0, lt=1.0)  # of the non-test rows
    split_seed: int = 0


class PromptDataConfig(DataConfig):
    """The online engine's prompts (streamed by Ray Data, never loaded by the driver)."""

    # preference rows carry the dataset's chosen/rejected answers (RRHF can rank them too)
    kind: Literal["prompt", "preference"] = "preference"
    split: Literal["all", "train", "validation", "test"] = "all"  # the split whose prompts train


class TrainDataConfig(DataConfig):
    """The offline trainer's rows: split into train / validation / test by the seeded hash."""

    test_path: InputPath | None = None  # a separate held-out file instead of the hash split's test share
    max_length: int = Field(384, ge=2)  # tokens of prompt + response; over-long rows keep the end of the prompt
    over_long: Literal["truncate", "drop"] = "truncate"
    # the text a conversation becomes: the model's chat template, or LMFlow's HH markers
    # "###Human: ...###Assistant: ..." (SFT and reward models; a reward model records it)
    prompt_format: PromptFormat = "chat"
