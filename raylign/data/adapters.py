"""Map the public dataset formats onto raylign's canonical rows.

Canonical rows (plain dicts, pyarrow-friendly):
  prompt      {prompt_id, prompt, messages, answer?}   (answer: a verifiable task's known answer)
  preference  {prompt_id, prompt, messages, chosen, rejected, preference}
  judgment    {prompt_id, prompt, instruction, input, output, judgment}
  ranklist    {prompt_id, prompt, messages, responses, scores}
  sft         {prompt_id, prompt, messages, response}   (a demonstration to imitate)

`messages` is the conversation before the response as chat turns, so that a
multi-turn HH-RLHF dialogue and a one-line AlpacaEval instruction go through the
same chat template.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Callable, Iterator

from raylign.data.readers import DataError, Record, iter_records

log = logging.getLogger(__name__)

KINDS = ("prompt", "preference", "judgment", "ranklist", "sft")
FORMATS = ("auto", "hh", "alpaca", "alpaca_eval", "cut", "rrhf", "gsm8k", "generic")
# what a GSM8K question is asked with: the answer line its solutions end with
GSM8K_INSTRUCTION = "\nSolve it step by step, then give the final answer on its own line as '#### <number>'."

_TURN = re.compile(r"\n\n(Human|Assistant):")


def prompt_id(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def user_messages(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def alpaca_prompt(instruction: str, input_text: str | None) -> str:
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def split_hh(transcript: str, source: str) -> tuple[list[dict], str]:
    """Split an HH-RLHF transcript into the dialogue before the last reply and that reply."""
    parts = _TURN.split("\n\n" + transcript.lstrip("\n"))
    turns = [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]
    if not turns or turns[-1][0] != "Assistant":
        raise DataError(f"{source}: HH transcript does not end with an 'Assistant:' turn")
    messages = [{"role": "user" if who == "Human" else "assistant", "content": text} for who, text in turns[:-1]]
    if not messages:
        raise DataError(f"{source}: HH transcript has no 'Human:' turn before the reply")
    return messages, turns[-1][1]


def render_transcript(messages: list[dict]) -> str:
    """Plain-text form of a conversation, used as the `prompt` string of multi-turn rows."""
    if len(messages) == 1:
        return messages[0]["content"]
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in messages)


def _with_prompt(messages: list[dict], **extra) -> dict:
    prompt = render_transcript(messages)
    return {"prompt_id": prompt_id(prompt), "prompt": prompt, "messages": messages, **extra}


# --- one function per (format, kind) -------------------------------------------------


def _hh_preference(rec: Record) -> dict | None:
    chosen_msgs, chosen = split_hh(rec.field("chosen"), rec.source)
    rejected_msgs, rejected = split_hh(rec.field("rejected"), rec.source)
    if chosen_msgs != rejected_msgs:
        raise DataError(f"{rec.source}: 'chosen' and 'rejected' have different dialogues before the reply")
    return _with_prompt(chosen_msgs, chosen=chosen, rejected=rejected, preference=1.0)


def _hh_prompt(rec: Record) -> dict:
    messages, _ = split_hh(rec.field("chosen"), rec.source)
    return _with_prompt(messages)


def _hh_ranklist(rec: Record) -> dict:
    row = _hh_preference(rec)
    return _ranklist_from_pair(row)


def _alpaca_messages(rec: Record) -> list[dict]:
    return user_messages(alpaca_prompt(rec.field("instruction"), rec.field("input", optional=True)))


def _alpaca_prompt(rec: Record) -> dict:
    return _with_prompt(_alpaca_messages(rec))


def _alpaca_ranklist(rec: Record) -> dict:
    return _with_prompt(_alpaca_messages(rec), **_ranked(rec, "output"))


def _alpaca_eval_preference(rec: Record) -> dict | None:
    """AlpacaEval pairs: preference in [1, 2], 1 = output_1 better; exact ties (1.5) are skipped."""
    pref = rec.field("preference", (int, float))
    if not 1.0 <= pref <= 2.0:
        raise DataError(f"{rec.source}: field 'preference' must be in [1, 2], got {pref}")
    if pref == 1.5:
        return None
    first, second = rec.field("output_1"), rec.field("output_2")
    chosen, rejected = (first, second) if pref < 1.5 else (second, first)
    return _with_prompt(_alpaca_messages(rec), chosen=chosen, rejected=rejected, preference=float(pref))


def _alpaca_eval_ranklist(rec: Record) -> dict | None:
    row = _alpaca_eval_preference(rec)
    return None if row is None else _ranklist_from_pair(row)


def _cut_judgment(rec: Record) -> dict:
    instruction, input_text = rec.field("instruction"), rec.field("input", optional=True) or ""
    judgment = rec.field("judgment", optional=True)
    prompt = alpaca_prompt(instruction, input_text)
    return {
        "prompt_id": prompt_id(prompt),
        "prompt": prompt,
        "instruction": instruction,
        "input": input_text,
        "output": rec.field("output"),
        "judgment": judgment,
    }


def _verifiable(rec: Record) -> dict:
    """A prompt's known answer and task, kept when the record has them (verifiable rewards)."""
    extra = {}
    if rec.data.get("answer") is not None:
        extra["answer"] = str(rec.data["answer"])
    if rec.data.get("task") is not None:
        extra["task"] = str(rec.data["task"])
    return extra


def _generic_prompt(rec: Record) -> dict:
    if "messages" in rec.data:
        return _with_prompt(_checked_messages(rec), **_verifiable(rec))
    return _with_prompt(user_messages(rec.field("prompt")), **_verifiable(rec))


def _gsm8k_answer(rec: Record) -> str:
    solution = rec.field("answer")
    if "####" not in solution:
        raise DataError(f"{rec.source}: field 'answer' has no '#### <number>' line")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def _gsm8k_prompt(rec: Record) -> dict:
    return _with_prompt(user_messages(rec.field("question") + GSM8K_INSTRUCTION), answer=_gsm8k_answer(rec),
                        task="gsm8k")


def _gsm8k_sft(rec: Record) -> dict:
    """The worked solution as the demonstration, its `<<...>>` calculator notes removed."""
    solution = re.sub(r"<<[^>]*>>", "", rec.field("answer"))
    _gsm8k_answer(rec)
    return _with_prompt(user_messages(rec.field("question") + GSM8K_INSTRUCTION), response=solution)


def _checked_messages(rec: Record) -> list[dict]:
    messages = rec.field("messages", list)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise DataError(f"{rec.source}: field 'messages[{i}]' needs string 'role' and 'content'")
    return messages


def _generic_preference(rec: Record) -> dict:
    return _with_prompt(
        user_messages(rec.field("prompt")), chosen=rec.field("chosen"), rejected=rec.field("rejected"), preference=1.0
    )


def _ranked(rec: Record, responses_field: str = "responses") -> dict:
    """k responses and their scores, checked: the same count, strings, numbers, k >= 2."""
    responses, scores = rec.field(responses_field, list), rec.field("scores", list)
    if len(responses) != len(scores):
        raise DataError(f"{rec.source}: field 'scores' has {len(scores)} items but '{responses_field}' has {len(responses)}")
    if len(responses) < 2:
        raise DataError(f"{rec.source}: field '{responses_field}' needs at least 2 responses to rank")
    if any(not isinstance(r, str) for r in responses):
        raise DataError(f"{rec.source}: field '{responses_field}' must hold strings")
    if any(isinstance(s, bool) or not isinstance(s, (int, float)) or s != s for s in scores):
        raise DataError(f"{rec.source}: field 'scores' must hold numbers")
    extra = {"sources": [str(x) for x in rec.data["sources"]]} if isinstance(rec.data.get("sources"), list) else {}
    return {"responses": list(responses), "scores": [float(s) for s in scores], **extra}


def _rrhf_messages(rec: Record) -> list[dict]:
    """RRHF's released files give the query as an HH transcript ending in "Assistant:"."""
    query = rec.field("query")
    if "Human:" in query and query.rstrip().endswith("Assistant:"):
        messages, _ = split_hh(query.rstrip(), rec.source)
        return messages
    return user_messages(query)


def _rrhf_ranklist(rec: Record) -> dict:
    return _with_prompt(_rrhf_messages(rec), **_ranked(rec))


def _rrhf_prompt(rec: Record) -> dict:
    return _with_prompt(_rrhf_messages(rec))


def _generic_ranklist(rec: Record) -> dict:
    """raylign's own ranked files (`raylign annotate rank`): messages or prompt, responses, scores[, sources]."""
    messages = _checked_messages(rec) if "messages" in rec.data else user_messages(rec.field("prompt"))
    return _with_prompt(messages, **_ranked(rec))


def _ranklist_from_pair(row: dict) -> dict:
    chosen, rejected = row.pop("chosen"), row.pop("rejected")
    row.pop("preference", None)
    return {**row, "responses": [chosen, rejected], "scores": [1.0, 0.0]}


def _sft_alpaca(rec: Record) -> dict:
    prompt = alpaca_prompt(rec.field("instruction"), rec.field("input", optional=True))
    return _with_prompt(user_messages(prompt), response=rec.field("output"))


def _sft_cut(rec: Record) -> dict | None:
    """CUT judgment rows: only the outputs judged acceptable (judgment null) are demonstrations."""
    return _sft_alpaca(rec) if rec.data.get("judgment") in (None, "") else None


def _sft_hh(rec: Record) -> dict:
    messages, reply = split_hh(rec.field("chosen"), rec.source)
    return _with_prompt(messages, response=reply)


def _sft_generic(rec: Record) -> dict:
    """{"messages": [... , {"role": "assistant", ...}]} (the last turn is the target) or {prompt, response}."""
    if "messages" in rec.data:
        messages = rec.field("messages", list)
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise DataError(f"{rec.source}: field 'messages[{i}]' needs string 'role' and 'content'")
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            raise DataError(f"{rec.source}: field 'messages' must end with an 'assistant' turn after the prompt")
        turns = [{"role": m["role"], "content": m["content"]} for m in messages]
        return _with_prompt(turns[:-1], response=turns[-1]["content"])
    return _with_prompt(user_messages(rec.field("prompt")), response=rec.field("response"))


ADAPTERS: dict[tuple[str, str], Callable[[Record], dict | None]] = {
    ("hh", "preference"): _hh_preference,
    ("hh", "prompt"): _hh_prompt,
    ("hh", "ranklist"): _hh_ranklist,
    ("alpaca", "prompt"): _alpaca_prompt,
    ("alpaca", "ranklist"): _alpaca_ranklist,
    ("alpaca_eval", "prompt"): _alpaca_prompt,
    ("alpaca_eval", "preference"): _alpaca_eval_preference,
    ("alpaca_eval", "ranklist"): _alpaca_eval_ranklist,
    ("cut", "judgment"): _cut_judgment,
    ("cut", "prompt"): _alpaca_prompt,
    ("rrhf", "ranklist"): _rrhf_ranklist,
    ("rrhf", "prompt"): _rrhf_prompt,
    ("generic", "prompt"): _generic_prompt,
    ("gsm8k", "prompt"): _gsm8k_prompt,
    ("gsm8k", "sft"): _gsm8k_sft,
    ("generic", "preference"): _generic_preference,
    ("generic", "ranklist"): _generic_ranklist,
    ("alpaca", "sft"): _sft_alpaca,
    ("alpaca_eval", "sft"): _sft_alpaca,
    ("cut", "sft"): _sft_cut,
    ("hh", "sft"): _sft_hh,
    ("generic", "sft"): _sft_generic,
}


def detect_format(rec: Record) -> str:
    keys = set(rec.data)
    if {"question", "answer"} <= keys:
        return "gsm8k"
    if {"query", "responses"} <= keys:
        return "rrhf"
    if {"output_1", "output_2"} <= keys:
        return "alpaca_eval"
    if "judgment" in keys:
        return "cut"
    if {"chosen", "rejected"} <= keys and "prompt" not in keys:
        return "hh"
    if "prompt" in keys or "messages" in keys:
        return "generic"
    if "instruction" in keys and "output" in keys:
        return "alpaca"
    if "instruction" in keys:
        return "alpaca_eval"
    raise DataError(f"{rec.source}: cannot tell the data format from fields {sorted(keys)}; pass format=...")


def iter_rows(
    path, kind: str, fmt: str = "auto", limit: int | None = None, on_error: str = "raise"
) -> Iterator[dict]:
    """Canonical rows of `kind` from a local file; rows an adapter skips (ties) are dropped.

    on_error="skip" drops rows whose fields are wrong (logging file:line and field),
    which real datasets need (HH-RLHF has a few mangled transcripts). A line that
    is not JSON at all always raises: the file itself is damaged.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not '{on_error}'")
    if kind not in KINDS:
        raise ValueError(f"unknown row kind '{kind}' (choose from {', '.join(KINDS)})")
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format '{fmt}' (choose from {', '.join(FORMATS)})")
    adapter = None
    produced = skipped = 0
    for rec in iter_records(path):
        if adapter is None:
            name = detect_format(rec) if fmt == "auto" else fmt
            adapter = ADAPTERS.get((name, kind))
            if adapter is None:
                supported = sorted(k for f, k in ADAPTERS if f == name)
                raise DataError(f"{path}: format '{name}' gives {', '.join(supported)} rows, not '{kind}' rows")
        try:
            row = adapter(rec)
        except DataError as err:
            if on_error == "raise":
                raise
            skipped += 1
            if skipped <= 5:
                log.warning("skipping row: %s", err)
            continue
        if row is None:
            continue
        yield row
        produced += 1
        if limit is not None and produced >= limit:
            break
    if skipped:
        log.warning("%s: skipped %d malformed row(s), kept %d", path, skipped, produced)


def check_source(path, kind: str, fmt: str = "auto", on_error: str = "raise") -> str:
    """Fail now on anything the first records can show (a missing file, an unknown extension or
    format, a first row the adapter rejects); returns the format, `auto` resolved."""
    if kind not in KINDS:
        raise DataError(f"unknown row kind '{kind}' (choose from {', '.join(KINDS)})")
    if fmt not in FORMATS:
        raise DataError(f"unknown data format '{fmt}' (choose from {', '.join(FORMATS)})")
    first = next(iter_records(path, limit=1), None)
    if first is None:
        raise DataError(f"{path}: holds no records")
    resolved = detect_format(first) if fmt == "auto" else fmt
    # Reads up to the first row the adapter keeps: a wrong format fails on line 1.
    if next(iter_rows(path, kind, resolved, limit=1, on_error=on_error), None) is None:
        raise DataError(f"{path}: no '{kind}' rows in format '{resolved}'")
    return resolved


def load_rows(path, kind: str, fmt: str = "auto", limit: int | None = None, on_error: str = "raise") -> list[dict]:
    return list(iter_rows(path, kind, fmt, limit, on_error))


def read_dataset(path, kind: str, fmt: str = "auto", limit: int | None = None, on_error: str = "raise"):
    """A Ray Data dataset of canonical rows (validated eagerly so errors name the line)."""
    import ray.data

    rows = load_rows(path, kind, fmt, limit, on_error)
    if not rows:
        raise DataError(f"{path}: no '{kind}' rows found")
    return ray.data.from_items(rows)


def human_probability(row: dict) -> float:
    """Annotator probability that `chosen` is better: 1 for hard labels, |pref-1.5|+0.5 for
    AlpacaEval's soft preference in [1, 2] (the adapter already put the winner in `chosen`)."""
    pref = float(row.get("preference", 1.0))
    if 1.0 <= pref <= 2.0 and pref != 1.0:
        return abs(pref - 1.5) + 0.5
    return 1.0
