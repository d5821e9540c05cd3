"""DAPO's dynamic sampling (Yu et al., 2025): train only on groups whose rewards differ.

A group whose k responses all scored the same (all right, all wrong) has a group-relative
advantage of 0 for every response: it adds nothing to the gradient but still dilutes the
token-level normalisation. With `grpo.dynamic_sampling`, the driver keeps a pool of the
informative groups across steps, and a step hands the trainer a batch only once the pool
holds `train_groups` of them (the excess is dropped, as DAPO does: it would be off-policy by
the next step). Steps in between train nothing and sample again with the same policy, which
is DAPO's "sample more until the batch is full". After `patience` steps without filling, the
pool trains as it is, so a task the policy never varies on cannot stall the run.
"""

from __future__ import annotations

from raylign.algorithms.base import group_rows


def informative(group: list[dict], tolerance: float = 1e-9) -> bool:
    """The group's rewards are not all equal (so some advantage is not 0)."""
    rewards = [float(row["reward"]) for row in group]
    return len(rewards) > 1 and max(rewards) - min(rewards) > tolerance


class GroupPool:
    """The driver's pool of informative groups; its state is saved per step for resuming."""

    def __init__(self, train_groups: int | None, patience: int):
        self.train_groups, self.patience = train_groups, patience
        self.pool: list[list[dict]] = []
        self.waited = 0

    def add(self, rows: list[dict]) -> tuple[list[dict], dict[str, float]]:
        """This step's rows in; the rows to train on (all from informative groups) or [] out."""
        groups = group_rows(rows)
        if self.train_groups is None:  # the step's own prompt count, fixed on the first step
            self.train_groups = len(groups)
        kept = [group for group in groups if informative(group)]
        self.pool.extend(kept)
        self.waited += 1
        metrics = {"dynamic_informative_groups": float(len(kept)),
                   "dynamic_equal_groups": float(len(groups) - len(kept))}
        if len(self.pool) < self.train_groups and not (self.pool and self.waited >= self.patience):
            return [], {**metrics, "dynamic_pool_groups": float(len(self.pool)), "dynamic_trained_groups": 0.0}
        batch, excess = self.pool[: self.train_groups], max(0, len(self.pool) - self.train_groups)
        self.pool, self.waited = [], 0
        return [row for group in batch for row in group], {**metrics, "dynamic_pool_groups": 0.0,
                                                            "dynamic_trained_groups": float(len(batch)),
                                                            "dynamic_excess_groups": float(excess)}

    def state_dict(self) -> dict:
        return {"pool": self.pool, "waited": self.waited, "train_groups": self.train_groups}

    def load_state_dict(self, state: dict) -> None:
        self.pool = state.get("pool", [])
        self.waited = state.get("waited", 0)
        self.train_groups = state.get("train_groups", self.train_groups)
