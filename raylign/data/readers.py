"""Read raw records from JSONL(.gz), JSON arrays, Parquet and HF `datasets` folders.

Each record carries its origin (file and line/index) so adapters can report a
malformed row precisely instead of failing somewhere deep in a Ray task.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator


class DataError(ValueError):
    """Input data is malformed; the message names the file, line and field."""


@dataclass(frozen=True)
class Record:
    data: dict[str, Any]
    source: str  # "path:line" for text formats, "path[row]" for columnar ones

    def field(self, name: str, types: type | tuple[type, ...] = str, optional: bool = False) -> Any:
        if name not in self.data or self.data[name] is None:
            if optional:
                return None
            raise DataError(f"{self.source}: missing field '{name}' (fields present: {sorted(self.data)})")
        value = self.data[name]
        if not isinstance(value, types):
            expected = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
            raise DataError(f"{self.source}: field '{name}' should be {expected}, got {type(value).__name__}")
        return value


def _open_text(path: Path):
    """Text in UTF-8; a byte-order mark at the start (as some editors write) is dropped."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return path.open("r", encoding="utf-8-sig")


def starts_with_bom(path: str | Path) -> bool:
    """The file (decompressed, for .gz) starts with a UTF-8 byte-order mark."""
    path = Path(path)
    if not path.is_file():
        return False
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read(3) == b"\xef\xbb\xbf"
    except OSError:
        return False


UNREADABLE = (EOFError, OSError, UnicodeDecodeError)  # truncated or fake gzip, bytes that are not UTF-8


def _lines(path: Path, handle) -> Iterator[tuple[int, str]]:
    """Numbered lines; a truncated or non-gzip `.gz`, or bytes that are not UTF-8, become a
    DataError naming the file and line instead of a decoder traceback."""
    number = 0
    try:
        for number, line in enumerate(handle, start=1):
            yield number, line
    except UNREADABLE as err:
        raise DataError(f"{path}:{number + 1}: cannot be read ({_why(path, err)})") from None


def _why(path: Path, err: Exception) -> str:
    if isinstance(err, EOFError):
        return "the compressed file is truncated"
    if isinstance(err, gzip.BadGzipFile) or (path.suffix == ".gz" and isinstance(err, OSError)):
        return f"not a valid gzip file: {err}"
    return str(err)


def _iter_jsonl(path: Path) -> Iterator[Record]:
    with _open_text(path) as handle:
        for number, line in _lines(path, handle):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(data, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(data).__name__}")
            yield Record(data, f"{path}:{number}")


def _iter_json_array(path: Path) -> Iterator[Record]:
    with _open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
        except UNREADABLE as err:
            raise DataError(f"{path}: cannot be read ({_why(path, err)})") from None
    if isinstance(data, dict):
        data = next((v for v in data.values() if isinstance(v, list)), None) or [data]
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise DataError(f"{path}[{index}]: expected a JSON object, got {type(item).__name__}")
        yield Record(item, f"{path}[{index}]")


def _iter_parquet(path: Path) -> Iterator[Record]:
    """Batch by batch, so peeking at the first rows of a huge file reads only those."""
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False).iter_batches(batch_size=1024):
        for item in batch.to_pylist():
            yield Record(item, f"{path}[{index}]")
            index += 1


def load_hf_folder(path: str | Path):
    """An HF `save_to_disk` folder as one `datasets.Dataset` (of a DatasetDict: `train`, else the first split)."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        loaded = loaded["train"] if "train" in loaded else next(iter(loaded.values()))
    return loaded


def _iter_hf_dataset(path: Path) -> Iterator[Record]:
    for index, item in enumerate(load_hf_folder(path)):
        yield Record(dict(item), f"{path}[{index}]")


def iter_records(path: str | Path, limit: int | None = None) -> Iterator[Record]:
    """Raw records of a local data file, chosen by extension (or an HF `save_to_disk` folder)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    name = path.name.lower()
    if path.is_dir():
        if not any((path / marker).exists() for marker in ("dataset_info.json", "dataset_dict.json", "state.json")):
            raise DataError(f"{path}: is a directory, not a data file (.jsonl[.gz], .json, .parquet) "
                            "or a `datasets` save_to_disk folder")
        reader = _iter_hf_dataset
    elif name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        reader = _iter_jsonl
    elif name.endswith((".json", ".json.gz")):
        reader = _iter_json_array
    elif name.endswith(".parquet"):
        reader = _iter_parquet
    else:
        raise DataError(f"{path}: unknown data format (use .jsonl[.gz], .json, .parquet or a datasets folder)")
    for count, record in enumerate(reader(path)):
        if limit is not None and count >= limit:
            return
        yield record


def read_outputs(path: str | Path, limit: int | None = None, lists: bool = True) -> list[dict]:
    """AlpacaEval outputs rows: {instruction, input, output, generator, source}, one per output.

    The one reader of outputs files (AlpacaEval's JSON list, JSONL, parquet, ...) for ranking,
    judging and leaderboards. With `lists`, a row whose `output` is a list (AlpacaFarm's
    multi-sample files) gives one row per output; without, `output` must be a string.
    `generator` falls back to the file's stem.
    """
    rows = []
    for rec in iter_records(path, limit):
        instruction = rec.field("instruction")
        input_text = rec.field("input", optional=True) or ""
        outputs = rec.field("output", (str, list) if lists else str)
        generator = str(rec.data.get("generator") or Path(path).stem)
        for output in outputs if isinstance(outputs, list) else [outputs]:
            if not isinstance(output, str):
                raise DataError(f"{rec.source}: field 'output' should hold strings, got {type(output).__name__}")
            rows.append({"instruction": instruction, "input": input_text, "output": output,
                         "generator": generator, "source": rec.source})
    if not rows:
        raise DataError(f"{path}: no outputs")
    return rows
