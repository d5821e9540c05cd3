"""A prompt corpus for the online engine, read by Ray Data so it never passes through the driver.

    read_json(lines=True) / read_parquet --map_batches--> canonical rows (the adapters)
        --map_batches--> one split (seeded prompt hash, as `raylign train rm`) --> limit

`PromptCorpus.check` runs before Ray starts: the file exists, its format is known and its
first records map to rows of the wanted kind, so a wrong path or format is a one-line error
and not a failed Ray task. Whether a split holds any prompt is only known after a pass; the
step server (`step_prompts.py`) says so naming the file and the split.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from raylign.data.adapters import check_source
from raylign.data.readers import DataError, iter_records, load_hf_folder, starts_with_bom
from raylign.data.splits import SPLITS

ROWS_PER_BATCH = 256  # records per adapter call
ERROR_COLUMN = "data_error"  # a block that is only this column carries the first bad record's message


@dataclass(frozen=True)
class PromptCorpus:
    """Where the prompts are and which of them to train on (the recipe's `data` section)."""

    path: str
    kind: str = "preference"
    format: str = "auto"
    on_error: str = "skip"
    limit: int | None = None
    split: str = "all"
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    split_seed: int = 0

    @classmethod
    def from_config(cls, data) -> PromptCorpus:
        """From an online recipe's `DataConfig` (or anything with the same fields)."""
        return cls(path=str(data.path), kind=data.kind, format=data.format, on_error=data.on_error,
                   limit=data.limit, split=data.split, test_fraction=data.test_fraction,
                   validation_fraction=data.validation_fraction, split_seed=data.split_seed)

    @property
    def name(self) -> str:
        return self.path if self.split == "all" else f"{self.path} (split '{self.split}')"

    def check(self) -> PromptCorpus:
        """Fail now, before Ray, on anything the first records can show; returns the corpus
        with `format` resolved, so every Ray Data block uses the adapter the file starts with."""
        if self.split not in SPLITS:
            raise DataError(f"unknown split '{self.split}' (choose from {', '.join(SPLITS)})")
        return replace(self, format=check_source(self.path, self.kind, self.format, self.on_error))

    def dataset(self, num_cpus: float = 0.01, concurrency: int = 1):
        """The canonical rows as a lazy Ray Data dataset, in file order (with `preserve_order`).

        Token CPUs and one task per stage: the reader runs beside the roles of a run, which
        may hold every whole CPU, and only has to stay ahead of sampling."""
        corpus = self if self.format != "auto" else self.check()
        ds = read_records(self.path, num_cpus=num_cpus, concurrency=concurrency)
        ds = ds.map_batches(PromptRows(corpus), batch_size=ROWS_PER_BATCH, batch_format="pyarrow", num_cpus=num_cpus,
                            concurrency=concurrency)
        return ds.limit(self.limit) if self.limit else ds


class PromptRows:
    """Ray Data stage: raw records -> canonical rows (the offline trainer's stages) of one split.

    A bad record becomes a one-row `data_error` block: raised here, the DataError would reach
    the reader wrapped by Ray Data with its message only in a traceback."""

    def __init__(self, corpus: PromptCorpus):
        from raylign.data.datasets import CanonicalRows, SplitFilter

        self.canonical = CanonicalRows(corpus.kind, corpus.format, corpus.on_error)
        self.split = None
        if corpus.split != "all":
            self.split = SplitFilter(corpus.split, corpus.test_fraction, corpus.validation_fraction, corpus.split_seed)

    def __call__(self, table):
        import pyarrow as pa

        try:
            rows = self.canonical(table)
        except DataError as err:
            return pa.table({ERROR_COLUMN: [str(err)]})
        return self.split(rows) if self.split is not None and rows.num_rows else rows


def read_records(path: str, num_cpus: float = 0.01, concurrency: int = 1):
    """Raw records (with a `path` column) as a Ray Data dataset, streamed where the format allows:
    JSON lines in chunks (`lines=True`), Parquet by row group. A `.json` file is one document,
    parsed whole by the reader (the step server, not the driver); an HF `save_to_disk` folder
    is memory-mapped."""
    import ray.data

    p = Path(path)
    name = p.name.lower()
    args = {"num_cpus": num_cpus, "concurrency": concurrency, "include_paths": True}
    if p.is_dir():
        return ray.data.from_huggingface(load_hf_folder(p))
    if name.endswith(".parquet"):
        return ray.data.read_parquet(str(p), **args)
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        # Ray's line reader rejects a leading byte-order mark; pyarrow's whole-block reader skips it
        lines = {} if starts_with_bom(p) else {"lines": True}
        return ray.data.read_json(str(p), file_extensions=None, **lines, **args)
    if name.endswith((".json", ".json.gz")):  # one document: parsed whole, as `raylign data check` reads it
        return ray.data.from_items([{**record.data, "path": str(p)} for record in iter_records(p)])
    raise DataError(f"{path}: unknown data format (use .jsonl[.gz], .json, .parquet or a datasets folder)")


def load_prompts(data) -> list[dict]:
    """All the prompts of a `data` section as a list, for evaluation on a few of them; training
    streams them instead (`PromptCorpus.dataset`)."""
    from raylign.data.adapters import load_rows
    from raylign.data.splits import select_split

    rows = load_rows(data.path, data.kind, data.format, None if data.split != "all" else data.limit, data.on_error)
    if data.split != "all":
        rows = select_split(rows, data.split, data.test_fraction, data.validation_fraction, data.split_seed)
        rows = rows[: data.limit] if data.limit else rows
    if not rows:
        raise DataError(f"{data.path}: no prompts in split '{data.split}'")
    return rows
