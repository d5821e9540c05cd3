"""CUT examples: judgment rows -> contrasts, positive downsampling, the two encodings.

A row with `judgment: null` is a positive (Align-P). A row with a judgment is a negative
and is encoded twice: the plain prompt + y (Misalign) and the judgment prompt + the same
y (Align-N). The ratio rule compares the two encodings token by token, so the response
tokens must be identical in both; `pack_examples` asserts it on every batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

from raylign.algorithms.cut import CUTConfig, response_aligned
from raylign.data.adapters import load_rows
from raylign.data.readers import DataError
from raylign.models.chat import encode_prompt, encode_response
from raylign.training.sequences import pack_prompt_responses


@dataclass
class CUTExample:
    prompt_id: str
    negative: bool
    plain_prompt: list[int]
    judged_prompt: list[int] | None  # None for positives
    response: list[int]


def load_judgments(paths, on_error: str = "raise", limit: int | None = None) -> list[dict]:
    """Judgment rows from one or more CUT files (`{instruction, input, output, judgment|null}`)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    rows: list[dict] = []
    for path in paths:
        rows += load_rows(path, "judgment", "cut", on_error=on_error)
    if not rows:
        raise DataError(f"{', '.join(map(str, paths))}: no judgment rows")
    return rows[:limit] if limit is not None else rows


def is_negative(row: dict) -> bool:
    judgment = row.get("judgment")
    return judgment is not None and str(judgment).strip() != ""


def downsample_positives(rows: list[dict], downsample: float | None, seed: int = 0) -> list[dict]:
    """Keep every negative and int(downsample * #negatives) seeded-random positives, in file order."""
    if downsample is None:
        return list(rows)
    positives = [i for i, row in enumerate(rows) if not is_negative(row)]
    keep_count = int(downsample * (len(rows) - len(positives)))
    if keep_count >= len(positives):
        return list(rows)
    kept = set(random.Random(seed).sample(positives, keep_count))
    return [row for i, row in enumerate(rows) if is_negative(row) or i in kept]


def plain_messages(row: dict) -> list[dict]:
    return [{"role": "user", "content": row["prompt"]}]


def judged_messages(row: dict, template: str) -> list[dict]:
    content = template.format(prompt=row["prompt"], instruction=row.get("instruction", row["prompt"]),
                              input=row.get("input") or "", judgment=row["judgment"])
    return [{"role": "user", "content": content}]


def encode_example(tokenizer, row: dict, config: CUTConfig) -> CUTExample:
    """Both encodings share one response encoding; each prompt keeps its end to fit max_length."""
    response = encode_response(tokenizer, row["output"], config.max_response_tokens)
    room = config.max_length - len(response)
    if room < 1:
        raise ValueError(f"max_length={config.max_length} leaves no room for a prompt beside "
                         f"max_response_tokens={config.max_response_tokens}")
    plain = encode_prompt(tokenizer, plain_messages(row), room)
    judged = encode_prompt(tokenizer, judged_messages(row, config.judgment_template), room) if is_negative(row) else None
    return CUTExample(row["prompt_id"], is_negative(row), plain, judged, response)


def encode_examples(tokenizer, rows: list[dict], config: CUTConfig) -> list[CUTExample]:
    return [encode_example(tokenizer, row, config) for row in rows]


def pack_examples(examples: list[CUTExample], pad_id: int) -> dict:
    """The plain encodings of every row and the judgment encodings of the negatives only.

    Returns {"plain": batch [N, L], "judged": batch [M, L'] (M negatives, possibly empty),
    "negative": [N] bool}. Raises if the two encodings of a negative do not give the same
    response tokens at the same response positions.
    """
    if not examples:
        raise ValueError("no CUT examples to pack")
    plain = pack_prompt_responses([e.plain_prompt for e in examples], [e.response for e in examples], pad_id)
    negatives = [e for e in examples if e.negative]
    judged = pack_prompt_responses([e.judged_prompt for e in negatives], [e.response for e in negatives], pad_id)
    negative = torch.tensor([e.negative for e in examples], dtype=torch.bool)
    if negatives:
        check_alignment({k: v[negative] for k, v in plain.items()}, judged)
    return {"plain": plain, "judged": judged, "negative": negative}


def check_alignment(plain: dict, judged: dict) -> None:
    """The response tokens of both encodings, aligned by response position, are identical."""
    ids_p, mask_p = response_aligned(plain["input_ids"], plain["response_mask"])
    ids_j, mask_j = response_aligned(judged["input_ids"], judged["response_mask"])
    if ids_p.shape != ids_j.shape or not torch.equal(mask_p, mask_j) or not torch.equal(ids_p, ids_j):
        bad = [i for i in range(min(len(ids_p), len(ids_j)))
               if ids_p.shape != ids_j.shape or not torch.equal(ids_p[i], ids_j[i])]
        raise AssertionError(f"CUT encodings disagree on the response tokens of row(s) {bad[:5]}: "
                             "the judgment-conditioned and plain encodings must align token for token")


def aligned_logprobs(plain_logprobs: torch.Tensor, judged_logprobs: torch.Tensor, packed: dict):
    """Token log-probs of both encodings [N, L] / [M, L'] -> response-aligned (plain, judged, mask)
    [N, R]; positives' judged rows are zeros (cut_loss never reads them). Gradients flow."""
    plain, mask = response_aligned(plain_logprobs, packed["plain"]["response_mask"])
    judged = torch.zeros_like(plain)
    negative = packed["negative"].to(plain.device)
    if bool(negative.any()):
        values, _ = response_aligned(judged_logprobs, packed["judged"]["response_mask"], plain.shape[1])
        judged = judged.index_put((negative.nonzero().squeeze(-1),), values)
    return plain, judged, mask
