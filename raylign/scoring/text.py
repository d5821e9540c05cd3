"""The one definition of the text a reward model scores for a (prompt, response) pair.

Training, evaluation, the Serve endpoint and the reward actor all call
`encode_scored_pair`, so a response is scored on exactly the tokens it was trained on:
the tokenizer's chat template over the conversation plus an assistant turn holding the
response (no generation prompt), or with `prompt_format="hh_markers"` LMFlow's
`###Human: ...###Assistant: {response}` text (`raylign.models.chat.render_hh_markers`).
Over-long pairs keep their *end* (the latest prompt turns and the response) or are
dropped, as configured.

Every turn is normalised first (`normalise_text`): Unicode NFKC, invisible characters dropped,
and every spelling of a turn marker (the real one, full-width, spaced, look-alike letters, a
zero-width space inside, `###Human:`) removed with its role word, so a policy cannot hide a bad
answer before a forged boundary and a refusal: the reward model reads the two as one answer.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Literal, Sequence

from raylign.config import PromptFormat
from raylign.models.chat import (
    as_messages,
    check_prompt_format,
    escape_messages,
    render_hh_markers,
    special_token_strings,
)

OverLongPair = Literal["truncate", "drop"]


class PairTooLongError(ValueError):
    """A (prompt, response) pair has more tokens than max_length and over_long='drop'."""


# Turn markers of the common chat templates, matched whatever the scored model's own tokenizer is.
KNOWN_MARKERS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>",
                 "<|end_header_id|>", "<|begin_of_text|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>",
                 "[INST]", "[/INST]", "<s>", "</s>", "<start_of_turn>", "<end_of_turn>")
ROLE_WORDS = ("system", "user", "assistant", "human", "model")
# characters that read as another one (beyond what NFKC folds): Cyrillic/Greek letters, bars, brackets
LOOK_ALIKES = {
    "a": "аαɑ", "c": "сϲ", "d": "ԁ", "e": "еҽ", "h": "һ", "i": "іιıӏ", "j": "ј", "m": "м", "n": "ո",
    "o": "оο0", "p": "рρ", "s": "ѕ", "t": "т", "x": "хχ", "y": "уү",
    "|": "∣│ǀ¦┃⏐︱lI1!", "<": "‹〈⟨«˂ᐸ", ">": "›〉⟩»˃ᐳ", "/": "∕⁄", "[": "⟦［", "]": "⟧］",
    "_": "-‐‑‒–— ",
}
INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f"
                       "\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]")


def _spelled(word: str) -> str:
    """A pattern for `word` in any look-alike characters, with spaces allowed beside punctuation."""
    pattern = ""
    for position, char in enumerate(word):
        if position and not (char.isalnum() and word[position - 1].isalnum()):
            pattern += r"\s*"
        pattern += "[" + re.escape(char) + "".join(re.escape(c) for c in LOOK_ALIKES.get(char.lower(), "")) + "]"
    return pattern


@lru_cache(maxsize=16)
def _marker_pattern(special_strings: tuple[str, ...]) -> re.Pattern:
    markers = sorted(set(special_strings) | set(KNOWN_MARKERS), key=len, reverse=True)
    marker = "|".join(_spelled(m) for m in markers if not m.isalnum())
    role = "|".join(_spelled(r) for r in ROLE_WORDS)
    hh_turn = rf"(?:#{{2,}}|(?:^|(?<=\n)))[ \t]*(?:{_spelled('human')}|{_spelled('assistant')})[ \t]*:"
    one = rf"(?:(?:{marker})(?:[ \t]*(?:{role})\b[ \t]*:?)?|{hh_turn})"
    return re.compile(rf"{one}(?:\s*{one})*", re.IGNORECASE)


def has_turn_marker(text: str, tokenizer=None) -> bool:
    """Whether any spelling of a turn marker is in `text` (a rule `annotate hack-pairs` flags)."""
    folded = INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    specials = tuple(special_token_strings(tokenizer)) if tokenizer is not None else ()
    return _marker_pattern(specials).search(folded) is not None


def normalise_text(tokenizer, text: str) -> str:
    """`text` as a reward model reads it: NFKC, no invisible characters, and each run of turn
    markers (any spelling, with their role words and the space around them) replaced by one
    newline, or by nothing at either end. Text without markers is only NFKC-folded."""
    text = INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    specials = tuple(special_token_strings(tokenizer)) if tokenizer is not None else ()
    bounds = [0] + [i for match in _marker_pattern(specials).finditer(text) for i in match.span()] + [len(text)]
    if len(bounds) == 2:
        return text
    pieces = (text[start:end] for start, end in zip(bounds[::2], bounds[1::2]))
    return "\n".join(piece.strip() for piece in pieces if piece.strip())


def scored_conversation(prompt_or_messages, response: str) -> list[dict]:
    """Chat turns for a prompt (string, messages list or row dict) plus the response turn."""
    if isinstance(prompt_or_messages, list):
        messages = [{"role": m["role"], "content": m["content"]} for m in prompt_or_messages]
    else:
        messages = as_messages(prompt_or_messages)
    return messages + [{"role": "assistant", "content": response}]


def render_scored_text(tokenizer, prompt_or_messages, response: str, prompt_format: PromptFormat = "chat") -> str:
    conversation = [{**m, "content": normalise_text(tokenizer, m["content"])}
                    for m in scored_conversation(prompt_or_messages, response)]
    if check_prompt_format(prompt_format) == "hh_markers":
        return render_hh_markers(tokenizer, conversation[:-1], response)
    if getattr(tokenizer, "chat_template", None):
        # Turn markers come from the template only: a response cannot forge a turn boundary.
        conversation = escape_messages(tokenizer, conversation)
        return tokenizer.apply_chat_template(conversation, add_generation_prompt=False, tokenize=False)
    # Tokenizers without a chat template (plain encoders): the HH-style transcript.
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "".join(f"\n\n{names.get(m['role'], m['role'])}: {m['content']}" for m in conversation)


def encode_scored_pair(
    tokenizer, prompt_or_messages, response: str, max_length: int, over_long: OverLongPair = "truncate",
    prompt_format: PromptFormat = "chat",
) -> list[int]:
    """Token ids of the scored text; over-long ones keep their last `max_length` tokens."""
    text = render_scored_text(tokenizer, prompt_or_messages, response, prompt_format)
    # The chat template already holds the special tokens (BOS/system) it wants; plain text
    # (HH markers, as LMFlow tokenizes them) gets the tokenizer's own.
    add_special = prompt_format != "chat" or not getattr(tokenizer, "chat_template", None)
    ids = list(tokenizer(text, add_special_tokens=add_special)["input_ids"])
    if len(ids) > max_length:
        if over_long == "drop":
            raise PairTooLongError(f"pair has {len(ids)} tokens, more than max_length={max_length}")
        ids = ids[-max_length:]
    return ids


def encode_many(
    tokenizer, prompts: Sequence, responses: Sequence[str], max_length: int, over_long: OverLongPair = "truncate",
    prompt_format: PromptFormat = "chat",
) -> list[list[int]]:
    return [encode_scored_pair(tokenizer, p, r, max_length, over_long, prompt_format) for p, r in zip(prompts, responses)]
