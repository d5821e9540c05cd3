"""`raylign train raft`: RAFT / expert iteration (sample K, keep the best, fine-tune).

Each step samples K responses per prompt, drops degenerate ones, keeps the best per
prompt ("local") or the global top fraction of the step ("top"), and takes ordinary
LM steps on them. The optimizer (and its state) lives for the whole run, so a run of
many steps is many rounds of expert iteration on fresh samples.
"""

from __future__ import annotations

from raylign.algorithms.base import (
    Algorithm,
    TrainContext,
    UpdateConfig,
    policy_rows,
    response_token_count,
    rows_logprobs,
)
from raylign.algorithms.online_job import OnlineJobConfig, online_main
from raylign.algorithms.raft import RAFTConfig, select_best, sft_loss


class RAFTJobConfig(OnlineJobConfig):
    raft: RAFTConfig = RAFTConfig()


class RAFTAlgorithm(Algorithm):
    """One unit = one kept response; the loss is its token-mean NLL over the global batch."""

    name = "raft"
    update = UpdateConfig(epochs=1, num_minibatches=1, micro_batch_size=4)

    def __init__(self, config: RAFTConfig, max_length: int):
        self.config = config
        self.max_length = max_length

    def select(self, rows: list[dict], step: int):
        kept, stats = select_best(policy_rows(rows), self.config)
        return kept, {f"raft_{k}": float(v) for k, v in stats.items()}

    def unit_weight(self, unit: dict) -> float:
        return float(response_token_count(unit, self.max_length))

    def loss(self, module, units: list[dict], context: TrainContext):
        logprobs, batch = rows_logprobs(module, units, context)
        return sft_loss(logprobs, batch["response_mask"])


def make_algorithm(config: RAFTJobConfig) -> RAFTAlgorithm:
    return RAFTAlgorithm(config.raft, config.engine.trainer.max_length)


def main(argv: list[str]) -> int:
    return online_main(argv, "train raft", "RAFT / expert iteration: sample K, keep the best, fine-tune.",
                       RAFTJobConfig, make_algorithm, "raft")
