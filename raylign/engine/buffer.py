"""Hand-off point between the Ray Data rollout stream and the Ray Train workers.

The driver puts each scored batch here under its step number; every trainer worker
asks for (step, rank) and gets its shard of whole prompt groups, waiting if the
batch is not ready yet. Rank 0 reports metrics back the same way, so the driver can
show progress while `TorchTrainer.fit()` runs.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import ray


def shard_groups(rows: list[dict], rank: int, world_size: int) -> list[list[dict]]:
    """Split rows into per-prompt groups and deal the groups round-robin to ranks.

    Every rank gets at least one group (repeating groups if there are fewer groups
    than ranks), since a data-parallel step needs every worker to take part.
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["prompt_id"]].append(row)
    ordered = [groups[key] for key in sorted(groups)]
    if not ordered:
        return []
    if len(ordered) < world_size:
        return [ordered[rank % len(ordered)]]
    return ordered[rank::world_size]


@ray.remote(num_cpus=0)
class RolloutBuffer:
    def __init__(self):
        self._batches: dict[int, list[dict]] = {}
        self._taken: dict[int, int] = defaultdict(int)
        self._ready: dict[int, asyncio.Event] = defaultdict(asyncio.Event)
        self._reports: list[dict] = []
        self._closed = False

    async def put(self, step: int, rows: list[dict]) -> None:
        self._batches[step] = rows
        self._ready[step].set()

    async def close(self) -> None:
        """No more batches: waiting workers get None and stop."""
        self._closed = True
        for event in list(self._ready.values()):
            event.set()

    async def get(self, step: int, rank: int, world_size: int) -> list[list[dict]] | None:
        while step not in self._batches:
            if self._closed:
                return None
            event = self._ready[step]
            try:
                await asyncio.wait_for(event.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                pass
        shard = shard_groups(self._batches[step], rank, world_size)
        self._taken[step] += 1
        if self._taken[step] >= world_size:  # every rank has its shard: free the rows
            del self._batches[step]
        return shard

    async def report(self, step: int, metrics: dict) -> None:
        self._reports.append({"step": step, **metrics})

    async def pop_reports(self) -> list[dict]:
        reports, self._reports = self._reports, []
        return reports

    async def pending(self) -> int:
        return len(self._batches)
