"""Annotation as a Ray Data job: pairs stream through actors that hold the annotator pool.

The pool's shared actors (sampler judges, reward-model actors) are started once in the
driver (`pool.prepare()`); each Ray Data actor holds a pickled copy of the pool that
calls them, so adding samplers or annotation actors scales the job. Every choice the
pool makes is a hash of the row, so results do not depend on how rows are batched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from raylign.data.readers import DataError, iter_records
from raylign.feedback.annotators import as_pairs
from raylign.feedback.pool import AnnotatorPool

REFERENCE = "reference_preference"


def read_pairs(path: str | Path, limit: int | None = None) -> list[dict]:
    """Pair rows, or candidate-list rows expanded into their pairs, from any file the readers know."""
    rows = []
    for rec in iter_records(path):
        rows.append(dict(rec.data))
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise DataError(f"{path}: no rows")
    return as_pairs(rows, str(path))


class _AnnotateBatch:
    """The Ray Data stage: a pyarrow batch of pairs in, the same rows with their labels out."""

    def __init__(self, pool: AnnotatorPool):
        self.pool = pool

    def __call__(self, batch):
        import pyarrow as pa

        return pa.Table.from_pylist(self.pool.annotate(batch.to_pylist()))


def _prepare_rows(rows: Sequence[dict]) -> list[dict]:
    """Index each row (to restore the order) and keep an input `preference` as the reference."""
    prepared = []
    for index, row in enumerate(as_pairs(rows)):
        row = dict(row)
        if "preference" in row:
            row[REFERENCE] = row.pop("preference")
        row["_row"] = index
        prepared.append(row)
    return prepared


def annotate_rows(rows: Sequence[dict], pool: AnnotatorPool, use_ray_data: bool = True, batch_size: int = 64,
                  concurrency: int = 1, num_cpus: float = 0.25) -> list[dict]:
    """Annotated rows in input order (candidate lists expanded into pairs).

    With `use_ray_data` the pool runs in `concurrency` Ray Data actors; otherwise in this
    process (same labels: every choice is a hash of the row).
    """
    prepared = _prepare_rows(rows)
    if not prepared:
        return []
    if not use_ray_data:
        out = pool.annotate(prepared)
    else:
        import ray.data

        ds = ray.data.from_items(prepared, override_num_blocks=max(1, len(prepared) // max(1, batch_size)))
        ds = ds.map_batches(_AnnotateBatch, fn_constructor_kwargs={"pool": pool}, batch_size=batch_size,
                            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=concurrency),
                            num_cpus=num_cpus)
        out = ds.take_all()
    out = sorted(out, key=lambda r: r["_row"])
    for row in out:
        row.pop("_row", None)
    return out


def quiet_ray_data() -> None:
    """Command-line runs print their own summary: no Ray Data progress logging."""
    import logging

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def write_jsonl(rows: Sequence[dict], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
