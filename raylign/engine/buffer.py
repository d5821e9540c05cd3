"""Hand-off point between the driver's rollout stream and the Ray Train workers.

The driver puts each step's *units* here (after the algorithm's batch-level `select`);
every trainer worker asks for (step, rank) and gets its round-robin share of whole units.
A rank whose share is empty also gets a filler unit that it trains at weight 0, so it
still joins every collective without training on a copy. Rank 0 reports metrics back
the same way, so the driver can show progress while `TorchTrainer.fit()` runs.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import ray


def shard_units(units: list, rank: int, world_size: int) -> dict:
    """This rank's units (round-robin, never repeated) and, when it has none, a filler."""
    mine = list(units[rank::world_size])
    filler = units[0] if (not mine and units) else None
    return {"units": mine, "filler": filler}


@ray.remote(num_cpus=0)
class RolloutBuffer:
    def __init__(self):
        self._batches: dict[int, tuple[list, dict]] = {}
        self._taken: dict[int, int] = defaultdict(int)
        self._ready: dict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self._reports: list[dict] = []
        self._closed = False
        self._latest_weights: tuple[list, int] | None = None

    async def put(self, step: int, units: list, metrics: dict | None = None) -> None:
        self._batches[step] = (units, metrics or {})
        self._ready[step].set()

    async def close(self) -> None:
        """No more batches: waiting workers get None and stop."""
        self._closed = True
        for event in list(self._ready.values()):
            event.set()

    async def get(self, step: int, rank: int, world_size: int) -> dict | None:
        while step not in self._batches:
            if self._closed:
                return None
            event = self._ready[step]
            try:
                await asyncio.wait_for(event.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
        units, metrics = self._batches[step]
        shard = {**shard_units(units, rank, world_size), "metrics": metrics}
        self._taken[step] += 1
        return shard

    async def release_before(self, step: int) -> None:
        """Free the batches of steps before `step`: a checkpoint covers them. Later ones stay,
        because a worker group restarted after a failure trains them again from there."""
        for old in [s for s in self._batches if s < step]:
            del self._batches[old]
            self._taken.pop(old, None)

    async def set_latest_weights(self, boxed_ref: list, version: int) -> None:
        """The newest pushed weights (an ObjectRef inside a list, so it is kept, not fetched):
        a sampler that Ray restarts loads these instead of its starting weights."""
        self._latest_weights = (boxed_ref, version)

    async def latest_weights(self) -> tuple[list, int] | None:
        return self._latest_weights

    async def is_closed(self) -> bool:
        return self._closed

    async def report(self, step: int, metrics: dict) -> None:
        self._reports.append({"step": step, **metrics})

    async def pop_reports(self) -> list[dict]:
        reports, self._reports = self._reports, []
        return reports

    async def pending(self) -> int:
        """Steps ready that no rank has taken yet (the queue in front of the trainer)."""
        return sum(1 for s in self._batches if self._taken[s] == 0)
