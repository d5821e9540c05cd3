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


def render_turns(system: str | None, user: str, input_block: str, row: dict, fields: tuple[str, ...]) -> list[dict]:
    """A template's chat turns: `{field}` filled from the row in one pass (a field's text that itself
    reads `{output}` is never filled again), the input block only when the row has an input."""
    values = {name: row[name] for name in fields}
    values["input"] = input_block.replace("{input}", row["input"]) if row.get("input") else ""
    text = re.sub(r"\{(" + "|".join(values) + r")\}", lambda m: values[m.group(1)], user)
    turns = [{"role": "system", "content": system}] if system else []
    return turns + [{"role": "user", "content": text}]


@dataclass(frozen=True)
class JudgeTemplate:
    name: str
    user: str
    labels: tuple[str, str]  # answer for output_1, answer for output_2
    system: str | None = None
    input_block: str = "\n\nInput:\n{input}"  # shown only when the pair has an input

    def messages(self, pair: dict) -> list[dict]:
        return render_turns(self.system, self.user, self.input_block, pair, ("instruction", "output_1", "output_2"))


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


# Judgment templates: one response shown to a judge that writes what is wrong with it (CUT's
# language feedback, Xu et al. 2023) or says it is acceptable. Placeholders {instruction},
# {input}, {output}, filled in one pass like the pairwise ones.

ACCEPTABLE_REPLY = "The response is acceptable."


@dataclass(frozen=True)
class JudgmentTemplate:
    name: str
    user: str
    system: str | None = None
    input_block: str = "\n\n### Input:\n{input}"  # shown only when the row has an input

    def messages(self, row: dict) -> list[dict]:
        return render_turns(self.system, self.user, self.input_block, row, ("instruction", "output"))


JUDGMENT_TEMPLATES = {
    # The CUT files' judgments read "The response is incorrect. ... should be ...": ask for that
    # shape, and for one fixed sentence when nothing is wrong, which `parse_judgment` maps to None.
    "judgment": JudgmentTemplate(
        name="judgment",
        system="You review responses written by an AI assistant and point out their errors.",
        user=(
            "Below is an instruction and a response written for it.\n\n"
            "### Instruction:\n{instruction}{input}\n\n"
            "### Response:\n{output}\n\n"
            "Check the response: wrong facts or calculations, parts of the instruction it ignores or "
            "misreads, content that is made up, harmful or not asked for. If you find errors, write a short "
            "judgment that starts with \"The response\", says what is wrong and how it should be corrected. "
            f"If it has no errors, reply only: {ACCEPTABLE_REPLY}"
        ),
    ),
    # Completion-style, no system turn: for small or base models that continue a "### Judgment:" header.
    "judgment_alpaca": JudgmentTemplate(
        name="judgment_alpaca",
        user=(
            "Below is an instruction, paired with a response. Write a judgment of the response: point out its "
            f"errors and how to correct them, or, if it has none, write \"{ACCEPTABLE_REPLY}\"\n\n"
            "### Instruction:\n{instruction}{input}\n\n"
            "### Response:\n{output}\n\n"
            "### Judgment:"
        ),
    ),
}


def get_judgment_template(name: str) -> JudgmentTemplate:
    if name not in JUDGMENT_TEMPLATES:
        raise ValueError(f"unknown judgment template '{name}' (choose from {', '.join(sorted(JUDGMENT_TEMPLATES))})")
    return JUDGMENT_TEMPLATES[name]


MAX_JUDGMENT_CHARS = 2048  # the CUT files' longest judgment is 2,409 characters, the median 234

_PREFIX = re.compile(r"^(?:#+\s*)?(?:judg(?:e)?ment|feedback|critique|review)\s*:\s*", re.IGNORECASE)
_NO_ERRORS = r"no (?:obvious |major |factual |significant )?(?:errors?|mistakes?|issues?|problems?|flaws?)"
# A whole reply, or its opening up to a punctuation mark, that says nothing is wrong.
_ACCEPT = re.compile(
    r"^(?:(?:the |this )?(?:response|answer|output)(?: is| looks| seems| was)? )?"
    r"(?:(?:completely|entirely|fully|perfectly|totally) )?"
    r"(?:acceptable|perfect|correct|fine|good|great|excellent|accurate|flawless|ok|okay|error-free)"
    rf"|^(?:there are |it has |i found |i see |i can find )?{_NO_ERRORS}(?: (?:found|detected))?"
    r"(?: in (?:the|this) (?:response|answer))?"
    r"|^(?:none|lgtm|nothing to (?:correct|fix|add))"
)
_BOUNDARY = re.compile(r"$|[.,;:!\n]| and ")
# After an acceptance, any of these make the reply a judgment ("The response is good, but ...").
_CRITIQUE = re.compile(
    r"\b(?:but|however|although|though|except|yet|incorrect|inaccurate|wrong|errors?|mistakes?|missing|"
    r"lacks?|should|could|would be better|fails?|not)\b|n't\b"
)
_PRAISE_NEGATIONS = re.compile(
    rf"\b{_NO_ERRORS}\b|\b(?:does|did|do) not (?:contain|have|make|include) (?:any )?(?:errors?|mistakes?)\b"
    r"|\b(?:doesn't|didn't) (?:contain|have|make|include) (?:any )?(?:errors?|mistakes?)\b"
)


def parse_judgment(text: str | None, max_chars: int = MAX_JUDGMENT_CHARS) -> str | None:
    """A judge's reply as a CUT judgment: None when it says the response has no problems (or says
    nothing), else the trimmed text, cut to `max_chars` at a sentence or word end."""
    reply = _unwrap(_PREFIX.sub("", (text or "").strip()).strip())
    if not reply:
        return None
    lowered = " ".join(reply.lower().strip("*\"'`").split())
    match = _ACCEPT.match(lowered)
    if match and _BOUNDARY.match(lowered, match.end()):
        rest = _PRAISE_NEGATIONS.sub(" ", lowered[match.end():])
        if not _CRITIQUE.search(rest):
            return None
    return _cap(reply, max_chars)


def _unwrap(text: str) -> str:
    """A reply wholly inside one pair of quotes or bold marks, without them (judgments that only end
    with a quotation or a code block keep it)."""
    for mark in ("**", '"', "'", "`"):
        inner = text[len(mark):-len(mark)] if len(text) > 2 * len(mark) else ""
        if text.startswith(mark) and text.endswith(mark) and mark not in inner:
            return inner.strip()
    return text


def _cap(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    sentence = max(head.rfind(". "), head.rfind(".\n"), head.rfind("\n"))
    if sentence >= max_chars // 2:
        return head[: sentence + 1].rstrip()
    space = head.rfind(" ")
    return (head[:space] if space >= max_chars // 2 else head).rstrip()
