"""The project-wide held-out split: a seeded hash of the prompt id.

It needs no state, never puts one prompt on both sides, and every command that trains or
evaluates (reward models, DPO, SFT, the online recipes' prompts, `eval rm|policy|compare`)
picks exactly the same test prompts from the same file.
"""

from __future__ import annotations

import hashlib

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
