"""`raylign train online-dpo`: iterative DPO on the policy's own samples.

Each step samples K responses per prompt, ranks them with the reward source, pairs the
best with the worst, and takes DPO steps against the frozen reference actor's log-probs
(computed in the score stage, so the trainer never holds a second model).
"""

from __future__ import annotations

import torch

from raylign.algorithms.base import (
    Algorithm,
    TrainContext,
    UpdateConfig,
    policy_rows,
    rows_logprobs,
)
from raylign.algorithms.dpo import dpo_loss, sequence_logprobs
from raylign.algorithms.online_dpo import OnlineDPOConfig, make_pairs
from raylign.algorithms.online_job import OnlineJobConfig, online_main


class OnlineDPOJobConfig(OnlineJobConfig):
    dpo: OnlineDPOConfig = OnlineDPOConfig()


class OnlineDPOAlgorithm(Algorithm):
    """One unit = one (chosen, rejected) pair; the loss is averaged over the global pair count."""

    name = "online_dpo"
    needs_reference = True
    update = UpdateConfig(epochs=1, num_minibatches=1, micro_batch_size=2)

    def __init__(self, config: OnlineDPOConfig):
        self.config = config

    def select(self, rows: list[dict], step: int):
        pairs = make_pairs(policy_rows(rows), self.config.min_reward_gap)
        gaps = [c["reward"] - r["reward"] for c, r in pairs]
        return [[c, r] for c, r in pairs], {"pairs": float(len(pairs)),
                                            "pair_reward_gap": sum(gaps) / len(gaps) if gaps else 0.0}

    def loss(self, module, units: list[list[dict]], context: TrainContext):
        rows = [u[0] for u in units] + [u[1] for u in units]
        logprobs, batch = rows_logprobs(module, rows, context)
        policy = sequence_logprobs(logprobs, batch["response_mask"])
        ref = torch.tensor([sum(r["ref_logprobs"]) for r in rows], dtype=torch.float32)
        n = len(units)
        return dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], self.config.beta, self.config.loss_type)


def make_algorithm(config: OnlineDPOJobConfig) -> OnlineDPOAlgorithm:
    return OnlineDPOAlgorithm(config.dpo)


def main(argv: list[str]) -> int:
    return online_main(argv, "train online-dpo", "Online DPO: best-vs-worst pairs of sampled responses, DPO loss.",
                       OnlineDPOJobConfig, make_algorithm, "online_dpo")
