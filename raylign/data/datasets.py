"""Training and prompt data on Ray Data: files -> canonical rows -> one split, never through the driver.

Files are read by `ray.data.read_json` / `read_parquet` (or an HF `save_to_disk` folder);
each block is mapped to canonical rows by the same adapters `raylign data check` uses
(`raylign.data.adapters.ADAPTERS`), inside `map_batches`, and filtered to one split by
the seeded prompt hash of `raylign.data.splits.split_of`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from raylign.data.adapters import ADAPTERS, FORMATS, detect_format
from raylign.data.readers import DataError, Record, load_hf_folder
from raylign.data.splits import split_of

log = logging.getLogger(__name__)


def adapter_for(fmt: str, kind: str):
    table = {f: a for (f, k), a in ADAPTERS.items() if k == kind}
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

    def __init__(self, split: str, test_fraction: float, validation_fraction: float, seed: int = 0):
        self.split = split
        self.test_fraction, self.validation_fraction, self.seed = test_fraction, validation_fraction, seed

    @classmethod
    def of(cls, split: str, data) -> "SplitFilter":
        """The filter a `data` section asks for (a separate test file leaves no test share)."""
        test_fraction = 0.0 if getattr(data, "test_path", None) else data.test_fraction
        return cls(split, test_fraction, data.validation_fraction, data.split_seed)

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


def read_whole(path: str, kind: str, fmt: str = "auto", on_error: str = "raise"):
    """Every canonical row of `kind` in a file, unsplit (extra training rows)."""
    return read_raw(path).map_batches(CanonicalRows(kind, fmt, on_error), batch_format="pyarrow", batch_size=256)


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
    return ds.map_batches(SplitFilter.of(split, data_config), batch_format="pyarrow", batch_size=256)
