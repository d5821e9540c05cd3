"""Driver-side algorithm state (Quark's reward pool), kept step by step beside the trainer's
checkpoint.

`select` runs on the driver and may carry state from step to step. The driver selects
ahead of the trainer (`max_staleness`), so its state at any moment is newer than the
trainer's last checkpoint. It therefore writes, right after selecting step n and before
handing it to the trainer, `output_dir/algorithm_state/step_{n+1}.json`: the state a run
resuming at step n+1 starts with. The trainer cannot checkpoint step n+1 before it has
that batch, so a checkpoint's file always exists; files older than the newest
checkpoint are pruned. (A worker-group restart needs none of this: the driver lives on,
and the buffer keeps the steps it selected.)
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from raylign.algorithms.base import Algorithm
from raylign.engine.trainer_checkpoint import read_resume_state

STATE_DIR = "algorithm_state"
log = logging.getLogger(__name__)


def state_path(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / STATE_DIR / f"step_{step}.json"


def _saved_steps(folder: Path) -> list[int]:
    return sorted(int(p.stem.removeprefix("step_")) for p in folder.glob("step_*.json"))


def has_state(algorithm: Algorithm) -> bool:
    return algorithm.has_driver_state()


def save_algorithm_state(output_dir: Path, next_step: int, algorithm: Algorithm) -> Path | None:
    """Write the state a run resuming at `next_step` needs; prune what no checkpoint needs."""
    if not has_state(algorithm):
        return None
    path = state_path(output_dir, next_step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(algorithm.state_dict(), default=_plain))
    os.replace(tmp, path)
    checkpoint = read_resume_state(output_dir)
    oldest_needed = checkpoint["step"] if checkpoint else next_step
    for step in _saved_steps(path.parent):
        if step < oldest_needed:
            state_path(output_dir, step).unlink(missing_ok=True)
    return path


def load_algorithm_state(output_dir: Path, step: int, algorithm: Algorithm) -> bool:
    """Give a resumed run's algorithm its state as it was when `step` was about to be selected."""
    if step == 0 or not has_state(algorithm):
        return False
    path = state_path(output_dir, step)
    if not path.exists():
        log.warning("%s is missing: %s resumes at step %d with its driver-side state (%s) empty",
                    path, algorithm.name, step, type(algorithm).__name__)
        print(f"[raylign] WARNING: no {path.name} in {path.parent}: {algorithm.name} resumes with an empty state",
              flush=True)
        return False
    algorithm.load_state_dict(json.loads(path.read_text()))
    return True


def _plain(value):
    """NumPy scalars and arrays (a sequential pipeline's rows may hold them) as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"algorithm state holds a {type(value).__name__}, which JSON cannot store")
