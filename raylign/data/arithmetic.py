"""A seeded generator of integer-arithmetic problems with checkable answers.

Three tasks, sized so that the default 135M model starts well below perfect but above zero:
addition and subtraction of two two-digit numbers, and a one-digit times a two-digit number.
Each problem is written in one of several phrasings and asks for the number alone. A problem
(task and operands, whatever its phrasing) belongs to the train or the test split by a seeded
hash, so no test problem is ever trained on in another wording.

    raylign data arithmetic --split train --count 2000 --out arith_train.jsonl.gz

Rows: {"prompt", "answer", "task", "problem"} (the generic prompt format keeps `answer`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

SUFFIX = " Reply with only the number."
TASKS = ("add", "sub", "mul")
PHRASINGS = {
    "add": ["What is {a} + {b}?", "Compute {a} plus {b}.", "Add {a} and {b}.", "What is the sum of {a} and {b}?",
            "{a} + {b} = ?", "If you have {a} apples and get {b} more, how many apples do you have?"],
    "sub": ["What is {a} - {b}?", "Compute {a} minus {b}.", "Subtract {b} from {a}.",
            "What is the difference between {a} and {b}?", "{a} - {b} = ?",
            "If you have {a} apples and give away {b}, how many apples are left?"],
    "mul": ["What is {a} * {b}?", "Compute {a} times {b}.", "Multiply {a} by {b}.", "What is the product of {a} and {b}?",
            "{a} x {b} = ?", "If {a} boxes hold {b} apples each, how many apples are there in all?"],
}
# Wordings no train or test file uses: `--phrasings held-out` writes test problems in them, to
# measure whether a trained policy learned the arithmetic or the wording.
HELD_OUT_PHRASINGS = {
    "add": ["Calculate {a} + {b}.", "What do you get when you add {a} to {b}?", "Find the total of {a} and {b}."],
    "sub": ["Calculate {a} - {b}.", "What do you get when you take {b} away from {a}?", "How much is {a} minus {b}?"],
    "mul": ["Calculate {a} * {b}.", "What do you get when you multiply {a} by {b}?", "How much is {a} times {b}?"],
}


def operands(task: str, rng: random.Random) -> tuple[int, int]:
    if task == "add":
        return rng.randint(10, 99), rng.randint(10, 99)
    if task == "sub":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return max(a, b), min(a, b)  # never negative
    return rng.randint(2, 9), rng.randint(10, 99)


def solve(task: str, a: int, b: int) -> int:
    return {"add": a + b, "sub": a - b, "mul": a * b}[task]


def split_of_problem(task: str, a: int, b: int, test_fraction: float, seed: int) -> str:
    """Train or test, by a seeded hash of the problem itself (not its wording)."""
    digest = hashlib.sha1(f"{seed}:{task}:{a}:{b}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def generate(count: int, split: str = "train", seed: int = 0, tasks: tuple[str, ...] = TASKS,
             test_fraction: float = 0.2, split_seed: int = 0, held_out_phrasings: bool = False) -> list[dict]:
    """`count` distinct problems of `split`, tasks in turn, each in a seeded random phrasing
    (from HELD_OUT_PHRASINGS instead with `held_out_phrasings`)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not '{split}'")
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)} (choose from {', '.join(TASKS)})")
    rng = random.Random(f"{seed}:{split}")
    rows, seen, attempts = [], set(), 0
    while len(rows) < count:
        attempts += 1
        if attempts > 100 * count + 10_000:
            raise ValueError(f"only {len(rows)} distinct {split} problems of {tasks}: ask for fewer")
        task = tasks[len(rows) % len(tasks)]
        a, b = operands(task, rng)
        if (task, a, b) in seen or split_of_problem(task, a, b, test_fraction, split_seed) != split:
            continue
        seen.add((task, a, b))
        phrasing = rng.choice((HELD_OUT_PHRASINGS if held_out_phrasings else PHRASINGS)[task])
        rows.append({"prompt": phrasing.format(a=a, b=b) + SUFFIX, "answer": str(solve(task, a, b)), "task": task,
                     "problem": f"{task}:{a}:{b}"})
    return rows


def write_rows(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path
