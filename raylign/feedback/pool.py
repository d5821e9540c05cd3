"""A pool of simulated annotators (AlpacaFarm): seeded assignment, order swapping, ties, label noise.

Every random choice is a seeded hash of the row's own content, never a draw from a
shared generator, so a row gets the same annotator, swap and noise whatever batch,
order or Ray Data worker it lands in, and a rerun reproduces every label.

- assignment: each instruction (instruction + input) goes to one annotator;
- swapping: with probability 1/2 the two outputs are shown in the other order and the
  judgment is swapped back, so a judge's position bias averages out;
- ties: identical outputs get 1.5 without asking anyone;
- noise (training labels only): with probability 2p the label is replaced by a fair
  coin, so a hard label flips with probability p (AlpacaFarm: p = 0.25).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from pydantic import Field

from raylign.config import StrictModel
from raylign.feedback.annotators import Annotator, judged_pair, normalize_pair
from raylign.feedback.cache import AnnotationCache


class PoolConfig(StrictModel):
    seed: int = 0
    swap_order: bool = True  # show the outputs in a seeded random order, swap the judgment back
    training: bool = False  # add label noise (labels for training; never for evaluation)
    noise: float = Field(0.25, ge=0.0, le=0.5)  # p: flip rate of a training label
    assign_by: str = "instruction"  # "instruction" (instruction + input) or "pair" (also both outputs)


def unit(seed: int, purpose: str, *parts: str) -> float:
    """A uniform number in [0, 1) determined by the seed, a purpose tag and the row's text."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{seed}\x1f{purpose}".encode())
    for part in parts:
        digest.update(b"\x1e" + str(part).encode("utf-8"))
    return int.from_bytes(digest.digest(), "big") / 2**64


def _instruction_key(row: dict) -> tuple[str, str]:
    return row["instruction"], row.get("input") or ""


def _pair_key(row: dict) -> tuple[str, str, str, str]:
    return (*_instruction_key(row), row["output_1"], row["output_2"])


def assign(row: dict, names: Sequence[str], seed: int, assign_by: str = "instruction") -> str:
    if assign_by not in ("instruction", "pair"):
        raise ValueError(f"assign_by must be 'instruction' or 'pair', not '{assign_by}'")
    key = _instruction_key(row) if assign_by == "instruction" else _pair_key(row)
    return names[min(int(unit(seed, "assign", *key) * len(names)), len(names) - 1)]


def is_swapped(row: dict, seed: int) -> bool:
    return unit(seed, "swap", *_pair_key(row)) < 0.5


def is_tie(row: dict) -> bool:
    return row["output_1"].strip() == row["output_2"].strip()


def add_noise(preference: float, row: dict, seed: int, p: float) -> tuple[float, bool]:
    """(label, replaced): with probability 2p the label becomes a fair coin (1 or 2)."""
    if p <= 0 or unit(seed, "noise", *_pair_key(row)) >= 2 * p:
        return preference, False
    return (1.0 if unit(seed, "coin", *_pair_key(row)) < 0.5 else 2.0), True


def hard_label(preference: float) -> float:
    """1, 2, or 1.5 for a tie: the side a soft preference in [1, 2] points to."""
    return 1.0 if preference < 1.5 else 2.0 if preference > 1.5 else 1.5


class AnnotatorPool:
    """Routes each pair to its annotator and returns annotated rows.

    `annotators` maps names to `Annotator`s (a list uses their own names). Judgments
    go through `cache` (keyed by the annotator's fingerprint and the pair as shown),
    so repeated pairs and reruns cost nothing.
    """

    def __init__(self, annotators, config: PoolConfig | None = None, cache: AnnotationCache | None = None):
        if not isinstance(annotators, dict):
            annotators = {a.name: a for a in annotators}
        if not annotators:
            raise ValueError("an annotator pool needs at least one annotator")
        self.annotators: dict[str, Annotator] = dict(annotators)
        self.names = sorted(self.annotators)
        self.config = config or PoolConfig()
        self.cache = cache
        self.stats = {"judged": 0, "cached": 0, "ties": 0}

    def prepare(self) -> "AnnotatorPool":
        """Start what the annotators share (sampler or reward actors) in the driver, once."""
        from raylign.feedback.judges import share_samplers

        share_samplers(self.annotators.values())
        for annotator in self.annotators.values():
            annotator.prepare()
        return self

    def plan(self, row: dict) -> dict:
        return {
            "annotator": assign(row, self.names, self.config.seed, self.config.assign_by),
            "swapped": self.config.swap_order and is_swapped(row, self.config.seed),
            "tie": is_tie(row),
        }

    def annotate(self, rows: Sequence[dict]) -> list[dict]:
        """Rows plus `preference` (in [1, 2], 1 = output_1 better; noisy when training),
        `preference_clean`, `annotator`, `swapped`, `noised`."""
        rows = [normalize_pair(row, i) for i, row in enumerate(rows)]
        plans = [self.plan(row) for row in rows]
        clean: list[float | None] = [1.5 if plan["tie"] else None for plan in plans]
        self.stats["ties"] += sum(plan["tie"] for plan in plans)
        for name in self.names:
            todo = [i for i, plan in enumerate(plans) if plan["annotator"] == name and not plan["tie"]]
            if not todo:
                continue
            shown = [judged_pair(rows[i], plans[i]["swapped"]) for i in todo]
            judged = self._judge(self.annotators[name], shown)
            for i, value in zip(todo, judged):
                clean[i] = 3.0 - value if plans[i]["swapped"] else value
        out = []
        for row, plan, value in zip(rows, plans, clean):
            label, noised = value, False
            if self.config.training:
                label, noised = add_noise(value, row, self.config.seed, self.config.noise)
            out.append({**row, "preference": label, "preference_clean": value, "annotator": plan["annotator"],
                        "swapped": plan["swapped"], "noised": noised})
        return out

    def _judge(self, annotator: Annotator, shown: list[dict]) -> list[float]:
        if self.cache is None:
            self.stats["judged"] += len(shown)
            return annotator.check(annotator.preferences(shown), len(shown))
        fingerprint = annotator.fingerprint()
        found = self.cache.get_many(fingerprint, shown)
        missing = [i for i, value in enumerate(found) if value is None]
        if missing:
            fresh = annotator.check(annotator.preferences([shown[i] for i in missing]), len(missing))
            self.cache.put_many(fingerprint, [shown[i] for i in missing], fresh)
            for i, value in zip(missing, fresh):
                found[i] = value
        self.stats["judged"] += len(missing)
        self.stats["cached"] += len(shown) - len(missing)
        return found

    def close(self) -> None:
        for annotator in self.annotators.values():
            annotator.close()
