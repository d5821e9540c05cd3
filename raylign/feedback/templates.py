"""Judging templates: how a pair is shown to an LLM judge, and the two labels it answers with.

The judge's answer is read from its next-token probabilities of the two labels, so a
template ends by asking for the label alone. A pool mixes templates (and models) the
way AlpacaFarm mixes annotator prompts. Placeholders: {instruction}, {input},
{output_1}, {output_2}; they are filled in one pass, so braces inside the outputs are
left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class JudgeTemplate:
    name: str
    user: str
    labels: tuple[str, str]  # answer for output_1, answer for output_2
    system: str | None = None
    input_block: str = "\n\nInput:\n{input}"  # shown only when the pair has an input

    def messages(self, pair: dict) -> list[dict]:
        values = {
            "instruction": pair["instruction"],
            "input": self.input_block.replace("{input}", pair["input"]) if pair.get("input") else "",
            "output_1": pair["output_1"],
            "output_2": pair["output_2"],
        }
        text = re.sub(r"\{(instruction|input|output_1|output_2)\}", lambda m: values[m.group(1)], self.user)
        turns = [{"role": "system", "content": self.system}] if self.system else []
        return turns + [{"role": "user", "content": text}]


TEMPLATES = {
    "pairwise": JudgeTemplate(
        name="pairwise",
        system="You compare two answers to the same request and say which one is more helpful.",
        user=(
            "Request:\n{instruction}{input}\n\n"
            "Answer 1:\n{output_1}\n\n"
            "Answer 2:\n{output_2}\n\n"
            "Which answer follows the request better: accurate, complete, clear and no longer than needed? "
            "Reply with 1 or 2 only."
        ),
        labels=("1", "2"),
    ),
    "pairwise_ab": JudgeTemplate(
        name="pairwise_ab",
        user=(
            "Two assistants answered the same instruction.\n\n"
            "### Instruction\n{instruction}{input}\n\n"
            "### Assistant A\n{output_1}\n\n"
            "### Assistant B\n{output_2}\n\n"
            "Judge only helpfulness and correctness, not length or style. "
            "Which assistant did better? Answer with the single letter A or B."
        ),
        labels=("A", "B"),
        input_block="\n\n### Input\n{input}",
    ),
    "pairwise_strict": JudgeTemplate(
        name="pairwise_strict",
        system="You are a strict grader of instruction following.",
        user=(
            "Instruction: {instruction}{input}\n\n"
            "Response 1: {output_1}\n\n"
            "Response 2: {output_2}\n\n"
            "A response that ignores the instruction, is wrong, or refuses without reason loses. "
            "The better response is number"
        ),
        labels=("1", "2"),
        input_block=" (input: {input})",
    ),
}


def get_template(name: str) -> JudgeTemplate:
    if name not in TEMPLATES:
        raise ValueError(f"unknown judge template '{name}' (choose from {', '.join(sorted(TEMPLATES))})")
    return TEMPLATES[name]


def parse_label(text: str, labels: tuple[str, str]) -> int | None:
    """0 or 1 for the label a free-text answer starts with (or holds alone); None if unclear."""
    stripped = text.strip().strip("*\"'().:").strip()
    for index, label in enumerate(labels):
        if stripped == label or re.match(rf"^(?i:answer|assistant|response|output)?\s*{re.escape(label)}\b", stripped):
            return index
    found = [i for i, label in enumerate(labels) if re.search(rf"\b{re.escape(label)}\b", stripped)]
    return found[0] if len(found) == 1 else None
