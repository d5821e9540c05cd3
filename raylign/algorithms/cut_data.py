"""CUT examples: judgment rows -> contrasts, positive downsampling, the two encodings.

A row with `judgment: null` is a positive (Align-P). A row with a judgment is a negative
and is encoded twice: the plain prompt + y (Misalign) and the judgment prompt + the same
y (Align-N). The ratio rule compares the two encodings token by token, so the response
tokens must be identical in both; `pack_examples` asserts it on every batch. The offline
trainer runs the same encodings as Ray Data stages (`TagRows`, `EncodeJudgments`). `config`
arguments are the recipe's `cut` section (`raylign.algorithms.cut.CUTConfig`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from raylign.data.adapters import load_rows
from raylign.data.readers import DataError
from raylign.models.chat import encode_prompt, encode_response
from raylign.models.sequences import pack_prompt_responses


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


def keep_key(row: dict, seed: int = 0) -> float:
    """A seeded uniform draw per row from its content: positives with the smallest keys are
    kept, so the choice depends on neither file order nor how Ray Data splits the blocks."""
    text = f"{seed}\x00{row.get('prompt_id', '')}\x00{row.get('output', '')}"
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big") / 2**64


def positives_to_keep(num_positives: int, num_negatives: int, downsample: float | None) -> int:
    if downsample is None:
        return num_positives
    return min(num_positives, int(downsample * num_negatives))


def downsample_positives(rows: list[dict], downsample: float | None, seed: int = 0) -> list[dict]:
    """Keep every negative and int(downsample * #negatives) seeded positives, in file order."""
    positives = [i for i, row in enumerate(rows) if not is_negative(row)]
    count = positives_to_keep(len(positives), len(rows) - len(positives), downsample)
    kept = set(sorted(positives, key=lambda i: keep_key(rows[i], seed))[:count])
    return [row for i, row in enumerate(rows) if is_negative(row) or i in kept]


def plain_messages(row: dict) -> list[dict]:
    return [{"role": "user", "content": row["prompt"]}]


def judged_messages(row: dict, template: str) -> list[dict]:
    content = template.format(prompt=row["prompt"], instruction=row.get("instruction", row["prompt"]),
                              input=row.get("input") or "", judgment=row["judgment"])
    return [{"role": "user", "content": content}]


def encode_example(tokenizer, row: dict, config, max_length: int) -> CUTExample:
    """Both encodings share one response encoding; each prompt keeps its end to fit max_length."""
    response = encode_response(tokenizer, row["output"], config.max_response_tokens)
    room = max_length - len(response)
    if room < 1:
        raise ValueError(f"max_length={max_length} leaves no room for a prompt beside "
                         f"max_response_tokens={config.max_response_tokens}")
    plain = encode_prompt(tokenizer, plain_messages(row), room)
    judged = encode_prompt(tokenizer, judged_messages(row, config.judgment_template), room) if is_negative(row) else None
    return CUTExample(row["prompt_id"], is_negative(row), plain, judged, response)


def encode_examples(tokenizer, rows: list[dict], config, max_length: int) -> list[CUTExample]:
    return [encode_example(tokenizer, row, config, max_length) for row in rows]


def pack_examples(examples: list[CUTExample], pad_id: int) -> dict:
    """One packed batch for one forward pass: the plain encodings of all N rows, then the
    judgment encodings of the M negatives (as the reference stacks its 2B sequences).

    Returns {"batch": packed [N + M, L], "n": N, "negative": [N] bool}. Raises if the two
    encodings of a negative do not give the same response tokens at the same positions.
    """
    if not examples:
        raise ValueError("no CUT examples to pack")
    negatives = [e for e in examples if e.negative]
    prompts = [e.plain_prompt for e in examples] + [e.judged_prompt for e in negatives]
    responses = [e.response for e in examples] + [e.response for e in negatives]
    batch = pack_prompt_responses(prompts, responses, pad_id)
    n = len(examples)
    negative = torch.tensor([e.negative for e in examples], dtype=torch.bool)
    if negatives:
        plain_rows = torch.cat([negative, torch.zeros(len(negatives), dtype=torch.bool)])
        check_alignment({k: v[plain_rows] for k, v in batch.items()}, {k: v[n:] for k, v in batch.items()})
    return {"batch": batch, "n": n, "negative": negative}


def check_alignment(plain: dict, judged: dict) -> None:
    """The response tokens of both encodings, aligned by response position, are identical."""
    ids_p, mask_p = response_aligned(plain["input_ids"], plain["response_mask"])
    ids_j, mask_j = response_aligned(judged["input_ids"], judged["response_mask"])
    if ids_p.shape != ids_j.shape or not torch.equal(mask_p, mask_j) or not torch.equal(ids_p, ids_j):
        bad = [i for i in range(min(len(ids_p), len(ids_j)))
               if ids_p.shape != ids_j.shape or not torch.equal(ids_p[i], ids_j[i])]
        raise AssertionError(f"CUT encodings disagree on the response tokens of row(s) {bad[:5]}: "
                             "the judgment-conditioned and plain encodings must align token for token")


def aligned_logprobs(logprobs: torch.Tensor, packed: dict):
    """Token log-probs of a packed batch [N + M, L] -> response-aligned (plain, judged, mask)
    [N, R]; positives' judged rows are zeros (cut_loss never reads them). Gradients flow."""
    n, response_mask = packed["n"], packed["batch"]["response_mask"].to(logprobs.device)
    plain, mask = response_aligned(logprobs[:n], response_mask[:n])
    judged = torch.zeros_like(plain)
    negative = packed["negative"].to(plain.device)
    if bool(negative.any()):
        values, _ = response_aligned(logprobs[n:], response_mask[n:], plain.shape[1])
        judged = judged.index_put((negative.nonzero().squeeze(-1),), values)
    return plain, judged, mask


def response_aligned(values: Tensor, response_mask: Tensor, width: int | None = None) -> tuple[Tensor, Tensor]:
    """Gather each row's response positions (contiguous in packed batches) into columns 0..R-1.

    values [N, L] (log-probs or token ids) -> ([N, R], mask [N, R]); differentiable (gather).
    """
    response_mask = response_mask.bool()
    lengths = response_mask.sum(-1)
    starts = torch.where(lengths > 0, response_mask.float().argmax(-1), torch.zeros_like(lengths))
    if width is None:
        width = int(lengths.max()) if lengths.numel() else 0
    columns = torch.arange(width, device=values.device)
    index = (starts.to(values.device)[:, None] + columns[None, :]).clamp(max=values.shape[1] - 1)
    gathered = values.gather(1, index)
    mask = columns[None, :] < lengths.to(values.device)[:, None]
    return torch.where(mask, gathered, torch.zeros_like(gathered)), mask


class TagRows:
    """Ray Data stage: mark negatives and give each row its seeded downsampling key."""

    def __init__(self, seed: int):
        self.seed = seed

    def __call__(self, table):
        import pyarrow as pa

        rows = table.to_pylist()
        return pa.table({
            "prompt_id": pa.array([r["prompt_id"] for r in rows], pa.string()),
            "prompt": pa.array([r["prompt"] for r in rows], pa.string()),
            "instruction": pa.array([r.get("instruction") or r["prompt"] for r in rows], pa.string()),
            "input": pa.array([r.get("input") or "" for r in rows], pa.string()),
            "output": pa.array([r["output"] for r in rows], pa.string()),
            "judgment": pa.array([r.get("judgment") for r in rows], pa.string()),
            "negative": pa.array([is_negative(r) for r in rows], pa.bool_()),
            "keep_key": pa.array([keep_key(r, self.seed) for r in rows], pa.float64()),
        })


class EncodeJudgments:
    """Ray Data stage: judgment rows -> plain / judgment prompt ids and the shared response ids."""

    def __init__(self, model_path: str, cut, max_length: int):
        self.model_path, self.cut, self.max_length = model_path, cut, max_length

    def __call__(self, table):
        import pyarrow as pa

        from raylign.models.chat import load_tokenizer

        tokenizer = load_tokenizer(self.model_path)
        out = {"plain_prompt": [], "judged_prompt": [], "response": [], "negative": [], "length": []}
        for row in table.to_pylist():
            example = encode_example(tokenizer, row, self.cut, self.max_length)
            judged = example.judged_prompt or []
            out["plain_prompt"].append(example.plain_prompt)
            out["judged_prompt"].append(judged)
            out["response"].append(example.response)
            out["negative"].append(example.negative)
            out["length"].append(max(len(example.plain_prompt), len(judged)) + len(example.response))
        ids = pa.list_(pa.int32())
        return pa.table({
            "plain_prompt": pa.array(out["plain_prompt"], ids),
            "judged_prompt": pa.array(out["judged_prompt"], ids),
            "response": pa.array(out["response"], ids),
            "negative": pa.array(out["negative"], pa.bool_()),
            "length": pa.array(out["length"], pa.int32()),
        })


def downsample_dataset(ds, downsample: float | None):
    """Keep every negative and the int(downsample * #negatives) positives with the smallest keys."""
    if downsample is None:
        return ds
    negatives = ds.filter(lambda row: bool(row["negative"])).count()
    keys = sorted(row["keep_key"] for row in ds.filter(lambda row: not row["negative"]).select_columns(["keep_key"])
                  .take_all())
    count = positives_to_keep(len(keys), negatives, downsample)
    if count >= len(keys):
        return ds
    cutoff = keys[count - 1] if count else -1.0
    return ds.filter(lambda row: bool(row["negative"]) or row["keep_key"] <= cutoff)
