"""AlpacaFarm's data roles over the AlpacaEval pairs in ../shared/data.

AlpacaFarm splits its instructions into an SFT split (demonstrations), a preference split (pairs
the simulated annotators label), an unlabeled split (prompts the RL methods train on) and an
evaluation set. Here every row of `alpaca_eval_gpt4_pairs.jsonl.gz` is an AlpacaEval instruction
with GPT-4-turbo's output and another system's; the roles are drawn per instruction:

- evaluation: the instructions in the test split of `jobs/rm_alpaca.yaml` (the same seeded hash),
  so the simulated annotator `alpaca-rm-smollm2` never trained on them;
- sft / preference / unlabeled: the rest, shared by a second seeded hash (`role_seed`);
- SFT demonstrations: GPT-4-turbo's output for each SFT instruction (the pairs' `output_1`);
- the optional reference system: GPT-4-turbo's outputs on the evaluation instructions;
- a second evaluator's training pairs: the file's rows from `judge_rows_from` on (alpaca-rm-smollm2
  trained on the first 2,600), off the evaluation instructions, so it shares no label with the
  simulated annotator.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, model_validator

from raylign.config import StrictModel
from raylign.data.adapters import alpaca_prompt, prompt_id
from raylign.data.readers import DataError, iter_records
from raylign.data.splits import split_of
from raylign.feedback.pool import unit

ROLES = ("sft", "preference", "unlabeled")


class RoleSplit(StrictModel):
    # the evaluation instructions: jobs/rm_alpaca.yaml's test split (its RM never saw them)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    validation_fraction: float = Field(0.08, ge=0.0, lt=1.0)
    split_seed: int = 0
    # the other instructions, shared among the three training roles (fractions summing to 1)
    sft: float = Field(0.3, gt=0.0)
    preference: float = Field(0.35, gt=0.0)
    unlabeled: float = Field(0.35, gt=0.0)
    role_seed: int = 1
    eval_limit: int | None = Field(64, ge=1)  # evaluation instructions used (None: all of them)

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> "RoleSplit":
        total = self.sft + self.preference + self.unlabeled
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"roles: sft + preference + unlabeled must be 1, got {total:g}")
        return self


def role_of(instruction: str, text_input: str, split: RoleSplit) -> str:
    """'eval', or one of ROLES: a seeded hash of the instruction, independent of the file's order."""
    key = prompt_id(alpaca_prompt(instruction, text_input or None))
    if split_of(key, split.test_fraction, split.validation_fraction, split.split_seed) == "test":
        return "eval"
    draw, edge = unit(split.role_seed, "alpacafarm-role", instruction, text_input), 0.0
    for role in ROLES:
        edge += getattr(split, role)
        if draw < edge:
            return role
    return ROLES[-1]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_roles(pairs_path: str, split: RoleSplit, folder: Path, judge_rows_from: int | None = None) -> dict:
    """One file per role under `folder`; returns the counts."""
    instructions: dict[tuple[str, str], dict] = {}
    judge_pairs: list[dict] = []
    for index, rec in enumerate(iter_records(pairs_path)):
        row = rec.data
        if not isinstance(row.get("instruction"), str) or not isinstance(row.get("output_1"), str):
            raise DataError(f"{rec.source}: AlpacaEval pairs need string 'instruction' and 'output_1'")
        key = (row["instruction"], row.get("input") or "")
        entry = instructions.setdefault(key, {"instruction": key[0], "input": key[1], "dataset": row.get("dataset"),
                                              "reference": row["output_1"], "generator": row.get("generator_1")})
        if entry["reference"] != row["output_1"]:
            entry["generator"] = None  # output_1 is not one system's answer: no reference outputs from it
        if judge_rows_from is not None and index >= judge_rows_from and role_of(*key, split) != "eval":
            judge_pairs.append(row)
    by_role: dict[str, list[dict]] = {role: [] for role in ("eval", *ROLES)}
    for entry in instructions.values():
        by_role[role_of(entry["instruction"], entry["input"], split)].append(entry)
    if split.eval_limit is not None:
        by_role["eval"] = by_role["eval"][: split.eval_limit]
    empty = [role for role, rows in by_role.items() if not rows]
    if empty:
        raise DataError(f"{pairs_path}: no instruction falls in the {', '.join(empty)} role(s); change the fractions")
    folder.mkdir(parents=True, exist_ok=True)
    prompt = lambda e: {"instruction": e["instruction"], "input": e["input"], "dataset": e["dataset"]}  # noqa: E731
    _write_jsonl(folder / "sft.jsonl", [{**prompt(e), "output": e["reference"]} for e in by_role["sft"]])
    for role in ("preference", "unlabeled", "eval"):
        _write_jsonl(folder / f"{role}.jsonl", [prompt(e) for e in by_role[role]])
    reference = [{**prompt(e), "output": e["reference"], "generator": e["generator"] or "pairs_output_1"}
                 for e in by_role["eval"]]
    (folder / "reference_outputs.json").write_text(json.dumps(reference, indent=1, ensure_ascii=False))
    counts = {role: len(rows) for role, rows in by_role.items()}
    if judge_rows_from is not None:
        _write_jsonl(folder / "judge_pairs.jsonl", judge_pairs)
        counts["judge_pairs"] = len(judge_pairs)
    (folder / "roles.json").write_text(json.dumps({"source": pairs_path, "split": split.model_dump(),
                                                   "instructions": counts}, indent=1))
    return counts
