"""The one definition of the text a reward model scores for a (prompt, response) pair.

Training, evaluation, the Serve endpoint and the reward actor all call
`encode_scored_pair`, so a response is scored on exactly the tokens it was trained on:
the tokenizer's chat template over the conversation plus an assistant turn holding the
response (no generation prompt), or with `prompt_format="hh_markers"` LMFlow's
`###Human: ...###Assistant: {response}` text (`raylign.models.chat.render_hh_markers`).
Over-long pairs keep their *end* (the latest prompt turns and the response) or are
dropped, as configured.
"""

from __future__ import annotations

from typing import Literal, Sequence

from raylign.config import PromptFormat
from raylign.models.chat import as_messages, check_prompt_format, escape_messages, render_hh_markers

OverLongPair = Literal["truncate", "drop"]


class PairTooLongError(ValueError):
    """A (prompt, response) pair has more tokens than max_length and over_long='drop'."""


def scored_conversation(prompt_or_messages, response: str) -> list[dict]:
    """Chat turns for a prompt (string, messages list or row dict) plus the response turn."""
    if isinstance(prompt_or_messages, list):
        messages = [{"role": m["role"], "content": m["content"]} for m in prompt_or_messages]
    else:
        messages = as_messages(prompt_or_messages)
    return messages + [{"role": "assistant", "content": response}]


def render_scored_text(tokenizer, prompt_or_messages, response: str, prompt_format: PromptFormat = "chat") -> str:
    conversation = scored_conversation(prompt_or_messages, response)
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
