"""Preference pairs for reward-model training: a reproducible split, tokenization, batches.

The split is a seeded hash of `prompt_id`, so it needs no state, never puts one prompt
on both sides, and `raylign eval rm --split test` picks exactly the same pairs.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass

from raylign.data.adapters import load_rows
from raylign.scoring.text import PairTooLongError, encode_scored_pair

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test", "all")


def split_of(prompt_id: str, test_fraction: float, validation_fraction: float, seed: int = 0) -> str:
    digest = hashlib.sha1(f"{seed}:{prompt_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    if u < test_fraction:
        return "test"
    # The rest of [0, 1) is split again, so validation_fraction is a share of the non-test pairs.
    v = (u - test_fraction) / (1 - test_fraction)
    return "validation" if v < validation_fraction else "train"


def select_split(rows: list[dict], split: str, test_fraction: float, validation_fraction: float, seed: int):
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")
    if split == "all":
        return rows
    return [r for r in rows if split_of(r["prompt_id"], test_fraction, validation_fraction, seed) == split]


def human_probability(row: dict) -> float:
    """Annotator probability that `chosen` is better: 1 for hard labels, |pref-1.5|+0.5 for
    AlpacaEval's soft preference in [1, 2] (the adapter already put the winner in `chosen`)."""
    pref = float(row.get("preference", 1.0))
    if 1.0 <= pref <= 2.0 and pref != 1.0:
        return abs(pref - 1.5) + 0.5
    return 1.0


@dataclass
class TokenizedPair:
    chosen: list[int]
    rejected: list[int]
    p_human: float = 1.0

    @property
    def length(self) -> int:
        return max(len(self.chosen), len(self.rejected))


def tokenize_pairs(tokenizer, rows: list[dict], max_length: int, over_long: str) -> tuple[list[TokenizedPair], int]:
    """Tokenized pairs and how many were dropped for length (over_long='drop')."""
    pairs, dropped = [], 0
    for row in rows:
        try:
            chosen = encode_scored_pair(tokenizer, row, row["chosen"], max_length, over_long)
            rejected = encode_scored_pair(tokenizer, row, row["rejected"], max_length, over_long)
        except PairTooLongError:
            dropped += 1
            continue
        pairs.append(TokenizedPair(chosen, rejected, human_probability(row)))
    return pairs, dropped


def load_pair_rows(path: str, fmt: str = "auto", limit: int | None = None, on_error: str = "raise") -> list[dict]:
    return list(load_rows(path, "preference", fmt, limit=limit, on_error=on_error))


def length_grouped_batches(num_items: int, lengths: list[int], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches of indices whose members have similar lengths (less padding)."""
    rng = random.Random(seed)
    order = list(range(num_items))
    rng.shuffle(order)
    window = batch_size * 32
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def shard_batches(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """This worker's batches; every worker gets the same count so DDP steps stay in lockstep."""
    per_worker = len(batches) // world_size
    return batches[rank * per_worker : (rank + 1) * per_worker] if world_size > 1 else batches


def shard_items(num_items: int, rank: int, world_size: int) -> list[int]:
    """Evaluation shard: every item exactly once across workers (sums are all-reduced)."""
    return list(range(rank, num_items, world_size))
