"""Offline training data on Ray Data: files -> canonical rows -> one split, never through the driver.

Files are read by `ray.data.read_json` / `read_parquet` (or an HF `save_to_disk` folder);
each block is mapped to canonical rows by the same adapters `raylign data check` uses
(`raylign.data.adapters.ADAPTERS`), inside `map_batches`, and filtered to one split by
the seeded prompt hash of `raylign.data.splits.split_of`. Workers then group their shard's
rows by length (`length_grouped`).
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Iterable, Iterator

from raylign.data.adapters import (
    ADAPTERS,
    FORMATS,
    _with_prompt,
    alpaca_prompt,
    detect_format,
    split_hh,
    user_messages,
)
from raylign.data.readers import DataError, Record, load_hf_folder
from raylign.data.splits import split_of

log = logging.getLogger(__name__)


# --- SFT rows {prompt_id, prompt, messages, response}: the adapters have no such kind ---


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


SFT_ADAPTERS = {"alpaca": _sft_alpaca, "alpaca_eval": _sft_alpaca, "cut": _sft_cut, "hh": _sft_hh, "generic": _sft_generic}


def adapter_for(fmt: str, kind: str):
    table = SFT_ADAPTERS if kind == "sft" else {f: a for (f, k), a in ADAPTERS.items() if k == kind}
    if fmt not in table:
        raise DataError(f"format '{fmt}' gives no '{kind}' rows (formats with them: {', '.join(sorted(table))})")
    return table[fmt]


class CanonicalRows:
    """Ray Data stage: raw records -> canonical rows of `kind` (a callable, picklable)."""

    def __init__(self, kind: str, fmt: str, on_error: str):
        self.kind, self.fmt, self.on_error = kind, fmt, on_error

    def __call__(self, table):
        import pyarrow as pa

        rows, adapter, skipped = [], None, 0
        for data in table.to_pylist():
            path = data.pop("path", "data")
            rec = Record(data, f"{path} (record {json.dumps(data, default=str)[:80]}...)")
            if adapter is None:
                adapter = adapter_for(detect_format(rec) if self.fmt == "auto" else self.fmt, self.kind)
            try:
                row = adapter(rec)
            except DataError:
                if self.on_error == "raise":
                    raise
                skipped += 1
                continue
            if row is None:
                continue
            rows.append(row)
        if skipped:
            log.warning("skipped %d malformed row(s) in a block", skipped)
        return pa.Table.from_pylist(rows) if rows else pa.table({"prompt_id": pa.array([], pa.string())})


class SplitFilter:
    """Ray Data stage: keep the rows whose prompt hashes to `split`."""

    def __init__(self, split: str, data_config):
        self.split = split
        self.test_fraction = data_config.test_fraction if not data_config.test_path else 0.0
        self.validation_fraction = data_config.validation_fraction
        self.seed = data_config.split_seed

    def __call__(self, table):
        ids = table.column("prompt_id").to_pylist()
        keep = [split_of(i, self.test_fraction, self.validation_fraction, self.seed) == self.split for i in ids]
        return table.filter(keep) if ids else table


def read_raw(path: str):
    """A Ray Data dataset of raw records (with a `path` column), chosen by extension."""
    import ray.data

    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {path}")
    name = p.name.lower()
    if p.is_dir():
        return ray.data.from_huggingface(load_hf_folder(p))
    if name.endswith(".parquet"):
        return ray.data.read_parquet(str(p), include_paths=True)
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".json", ".json.gz")):
        return ray.data.read_json(str(p), include_paths=True, file_extensions=None)
    raise DataError(f"{path}: unknown data format (use .jsonl[.gz], .json, .parquet or a datasets folder)")


def read_split(data_config, kind: str, split: str):
    """Canonical rows of one split ("train" | "validation" | "test") as a Ray Data dataset.

    `limit` keeps the first N canonical rows of the file *before* the split, so the test
    prompts are the same with or without it (needs `preserve_order`, set by the trainer).
    A separate `test_path` is read whole as the test split.
    """
    if data_config.format not in FORMATS:
        raise DataError(f"unknown data format '{data_config.format}' (choose from {', '.join(FORMATS)})")
    stage = CanonicalRows(kind, data_config.format, data_config.on_error)
    if split == "test" and data_config.test_path:
        return read_raw(data_config.test_path).map_batches(stage, batch_format="pyarrow", batch_size=256)
    ds = read_raw(data_config.path).map_batches(stage, batch_format="pyarrow", batch_size=256)
    if data_config.limit:
        ds = ds.limit(data_config.limit)
    return ds.map_batches(SplitFilter(split, data_config), batch_format="pyarrow", batch_size=256)


# --- worker side ------------------------------------------------------------------------


def plain(row: dict) -> dict:
    """A Ray Data row with numpy arrays turned into lists (collate functions index them)."""
    out = {}
    for key, value in dict(row).items():
        out[key] = value.tolist() if hasattr(value, "tolist") else value
    return out


def length_grouped(rows: Iterable[dict], batch_size: int, window_batches: int, seed: int) -> Iterator[list[dict]]:
    """Micro-batches of similar length: every `window_batches * batch_size` rows are sorted by
    `length`, cut into batches, and the batches shuffled (seeded), so padding stays small
    while the order is still random. Streams: never holds more than one window."""
    rng = random.Random(seed)
    window = max(1, batch_size * max(1, window_batches))
    buffer: list[dict] = []

    def emit():
        rng.shuffle(buffer)
        ordered = sorted(buffer, key=lambda r: r["length"])
        batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
        rng.shuffle(batches)
        return batches

    for row in rows:
        buffer.append(plain(row))
        if len(buffer) >= window:
            yield from emit()
            buffer = []
    if buffer:
        yield from emit()
