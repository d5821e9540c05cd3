"""Random-number-generator state in checkpoints, one entry per rank.

A resumed run should draw the same random numbers an uninterrupted one would (dropout,
LoRA dropout, any sampling a loss does), so every checkpoint carries each rank's torch,
CUDA, Python and NumPy generator state. Ranks differ (their draws differ), so the states
are gathered to the rank that writes the checkpoint and each rank takes back its own.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch

from raylign.collectives import distributed

RNG_FILE = "rng_state.pt"
log = logging.getLogger(__name__)


def capture_rng() -> dict:
    """This process's generator states (picklable, CPU tensors only)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng() -> list[dict]:
    """Every rank's states, indexed by rank (a collective: every rank must call it)."""
    mine = capture_rng()
    if not distributed():
        return [mine]
    states: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(states, mine)
    return states


def save_rng(folder: Path, states: list[dict]) -> None:
    torch.save(states, Path(folder) / RNG_FILE)


def load_rng(folder: Path, rank: int, world_size: int) -> bool:
    """Restore this rank's states from `folder`; False (and a warning) when the checkpoint
    has none for it (an older checkpoint, or a different number of workers)."""
    path = Path(folder) / RNG_FILE
    if not path.exists():
        log.warning("%s has no %s: random streams restart from the seed", folder, RNG_FILE)
        return False
    # our own file, written by save_rng; NumPy's state is not a plain tensor, so not weights_only
    states = torch.load(path, map_location="cpu", weights_only=False)
    if len(states) != world_size:
        log.warning("%s holds random states of %d workers, this run has %d: random streams restart from the seed",
                    folder, len(states), world_size)
        return False
    restore_rng(states[rank])
    return True
