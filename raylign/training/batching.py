"""Worker-side batching of the offline trainer: Ray Data rows -> length-grouped micro-batches."""

from __future__ import annotations

import random
from typing import Iterable, Iterator


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
