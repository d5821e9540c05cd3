"""Tokenizer loading and the one place where chat templates are applied.

Samplers, trainers and reward models all build prompt token ids here, so a prompt
is encoded the same way whichever backend generates or scores it. `prompt_format`
picks the text a conversation becomes: the chat template ("chat"), or LMFlow's HH
markers ("hh_markers", `render_hh_markers`), the form its HH SFT and reward models saw.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal, Sequence, get_args

from raylign.config import PromptFormat

OverLong = Literal["truncate", "reject"]
PROMPT_FORMATS: tuple[str, ...] = get_args(PromptFormat)
HH_MARKER_ROLES = {"user": "Human", "assistant": "Assistant"}


class PromptTooLongError(ValueError):
    pass


@lru_cache(maxsize=8)
def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


GENERATION_FILE = "raylign_generation.json"


def save_prompt_prefix(model_dir: str | Path, tokens: list[str]) -> None:
    """Make a checkpoint condition every prompt on control tokens (Quark's best-quantile token)
    wherever it is used: the tokens go at the start of its chat template, so plain transformers
    (`apply_chat_template`), vLLM and our samplers all put them before the prompt, and the
    record says so (our samplers then add nothing themselves)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokens and getattr(tokenizer, "chat_template", None):
        prefix = "".join(tokens).replace("'", "\\'")
        tokenizer.chat_template = "{{ '" + prefix + "' }}" + tokenizer.chat_template
        tokenizer.save_pretrained(str(model_dir))
        load_tokenizer.cache_clear()  # a tokenizer cached from this folder has the old template
        in_template = True
    else:
        in_template = False
    record = {"prompt_prefix_tokens": list(tokens), "in_chat_template": in_template}
    (Path(model_dir) / GENERATION_FILE).write_text(json.dumps(record))


def prompt_prefix_ids(model_dir: str | Path, tokenizer) -> list[int]:
    """Token ids a sampler must put before a checkpoint's encoded prompts: the recorded prefix,
    unless its chat template already starts with it; [] for an ordinary model."""
    path = Path(model_dir) / GENERATION_FILE
    if not path.is_file():
        return []
    record = json.loads(path.read_text())
    tokens = record.get("prompt_prefix_tokens", [])
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError(f"{path}: prefix tokens {tokens} are not in the model's vocabulary")
    return [] if record.get("in_chat_template") else list(ids)


ZERO_WIDTH_SPACE = "\u200b"


def special_token_strings(tokenizer) -> list[str]:
    """The strings the tokenizer turns into special tokens (chat-turn markers, EOS, ...),
    longest first. Cached per tokenizer and vocabulary size: every encode asks for them."""
    return _special_token_strings(tokenizer, len(tokenizer))


@lru_cache(maxsize=16)
def _special_token_strings(tokenizer, vocab_size: int) -> list[str]:
    strings = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(added, "special", False):
            strings.add(str(added))
    return sorted((t for t in strings if len(t) > 1), key=len, reverse=True)


def escape_special_tokens(tokenizer, text: str) -> str:
    """`text` with every special-token string broken by a zero-width space after its first
    character, so text written by a user or sampled from a policy is read as text and can
    never forge a chat-turn boundary (`<|im_end|><|im_start|>assistant ...`). Text without
    such strings is returned unchanged, so ordinary prompts encode exactly as before."""
    for special in special_token_strings(tokenizer):
        if special in text:
            text = text.replace(special, special[0] + ZERO_WIDTH_SPACE + special[1:])
    return text


def escape_messages(tokenizer, messages: Sequence[dict]) -> list[dict]:
    return [{**m, "content": escape_special_tokens(tokenizer, m["content"])} for m in messages]


def as_messages(row_or_prompt) -> list[dict]:
    if isinstance(row_or_prompt, str):
        return [{"role": "user", "content": row_or_prompt}]
    messages = row_or_prompt.get("messages")
    if messages:
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    return [{"role": "user", "content": row_or_prompt["prompt"]}]


def check_prompt_format(value: str) -> str:
    if value not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format '{value}' is unknown (choose from {', '.join(PROMPT_FORMATS)})")
    return value


def render_hh_markers(tokenizer, messages: Sequence[dict], response: str | None = None) -> str:
    """LMFlow's HH text, as its hh_rlhf SFT and reward files are written:
    `###Human: {turn}###Assistant: {turn}...###Assistant:`, then ` {response}` when given.
    Special-token strings in the turns are escaped; nothing stops a turn from writing
    `###Human:` itself (LMFlow's format has no reserved markers)."""
    text = "".join(f"###{HH_MARKER_ROLES.get(m['role'], m['role'].title())}: "
                   f"{escape_special_tokens(tokenizer, m['content'])}" for m in messages) + "###Assistant:"
    return text if response is None else text + " " + escape_special_tokens(tokenizer, response)


def encode_prompt(tokenizer, messages: Sequence[dict], max_tokens: int, over_long: OverLong = "truncate",
                  prompt_format: PromptFormat = "chat") -> list[int]:
    """Prompt ids with the generation prompt appended; over-long ones keep their end."""
    if check_prompt_format(prompt_format) == "hh_markers":
        ids = tokenizer(render_hh_markers(tokenizer, messages))["input_ids"]
    elif getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(escape_messages(tokenizer, messages), add_generation_prompt=True,
                                            tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
    else:
        ids = tokenizer("\n\n".join(m["content"] for m in messages) + "\n\n")["input_ids"]
    ids = list(ids)
    if len(ids) > max_tokens:
        if over_long == "reject":
            raise PromptTooLongError(f"prompt has {len(ids)} tokens, more than max_prompt_tokens={max_tokens}")
        # Keep the most recent context: the generation prompt sits at the end.
        ids = ids[-max_tokens:]
    return ids


def encode_raw_prompt(tokenizer, text: str, max_tokens: int, over_long: OverLong = "truncate") -> list[int]:
    """A plain-text completion prompt (few-shot demonstrations), no chat template.

    Over-long ones keep their end, where the text to be continued sits.
    """
    ids = list(tokenizer(text)["input_ids"])
    if len(ids) > max_tokens:
        if over_long == "reject":
            raise PromptTooLongError(f"prompt has {len(ids)} tokens, more than max_prompt_tokens={max_tokens}")
        ids = ids[-max_tokens:]
    return ids


def encode_response(tokenizer, text: str, max_tokens: int, prompt_format: PromptFormat = "chat") -> list[int]:
    """Token ids of a response as the model would emit it, ending with EOS. After HH markers'
    `###Assistant:` the reply starts with a space, as in `render_hh_markers`."""
    text = escape_special_tokens(tokenizer, text)
    if check_prompt_format(prompt_format) == "hh_markers":
        text = " " + text
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][: max_tokens - 1]
    return list(ids) + [tokenizer.eos_token_id]


def encode_row(tokenizer, row: dict, response_keys: Sequence[str], max_length: int,
               prompt_format: PromptFormat = "chat") -> tuple[list[int], list[list[int]]]:
    """A training row's chat prompt and the responses under `response_keys`, each cut to
    `max_length`: how every offline objective encodes its rows (SFT's demonstration, DPO's pair)."""
    prompt = encode_prompt(tokenizer, as_messages(row), max_length, prompt_format=prompt_format)
    return prompt, [encode_response(tokenizer, row[key], max_length, prompt_format) for key in response_keys]
