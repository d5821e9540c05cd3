"""`raylign train rrhf`: RRHF on the distributed engine (sample k, score, rank + SFT, sync)."""

from __future__ import annotations

import torch

from raylign.algorithms.base import Algorithm, TrainContext, UpdateConfig, rows_logprobs
from raylign.algorithms.kl import kl_k3, scatter_response_values
from raylign.algorithms.online_job import (  # noqa: F401
    DataConfig,
    OnlineJobConfig,
    online_main,
    run_online,
)
from raylign.algorithms.rrhf import RRHFConfig, rrhf_loss


class RRHFJobConfig(OnlineJobConfig):
    rrhf: RRHFConfig = RRHFConfig()


class RRHFAlgorithm(Algorithm):
    """One unit = one prompt's candidates (sampled + the dataset's), ranked by reward."""

    name = "rrhf"
    update = UpdateConfig(epochs=1, num_minibatches=1, micro_batch_size=1)

    def __init__(self, config: RRHFConfig, kl_coef: float = 0.0, dataset_responses: bool = False):
        self.config = config
        self.kl_coef = kl_coef
        self.needs_reference = kl_coef > 0
        self.dataset_responses = dataset_responses

    def loss(self, module, units: list, context: TrainContext):
        """One forward over every candidate of the micro-batch's groups, then the RRHF loss
        per group (+ kl_coef * KL(pi || ref) on the policy's own samples, the RRHF paper's
        fix for reward hacking when sampling online), summed over groups."""
        rows = [row for group in units for row in group]
        logprobs, batch = rows_logprobs(module, rows, context)
        mask = batch["response_mask"]
        total, sums, start = 0.0, {}, 0
        for group in units:
            rows_of_group = slice(start, start + len(group))
            start += len(group)
            scores = torch.tensor([[float(r["reward"]) for r in group]])
            loss, metrics = rrhf_loss(logprobs[rows_of_group], mask[rows_of_group], scores,
                                      self.config.rrhf_weight, self.config.length_penalty)
            sampled = [i for i, r in enumerate(group) if r.get("source") != "dataset" and r.get("ref_logprobs") is not None]
            if self.kl_coef > 0 and sampled:
                picked = [rows_of_group.start + i for i in sampled]
                ref = scatter_response_values([group[i]["ref_logprobs"] for i in sampled], mask[picked])
                kl = kl_k3(logprobs[picked], ref.to(logprobs.device), mask[picked])
                loss = loss + self.kl_coef * kl
                metrics = {**metrics, "kl": float(kl.detach()), "loss": float(loss.detach())}
            total = total + loss
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(value) / len(units)
        return total, float(len(units)), sums


def make_algorithm(config: RRHFJobConfig) -> RRHFAlgorithm:
    return RRHFAlgorithm(
        config.rrhf,
        kl_coef=config.reference.kl_coef,
        dataset_responses=config.rrhf.include_dataset_responses and config.data.kind == "preference",
    )


def run(config: RRHFJobConfig) -> dict:
    return run_online(config, make_algorithm(config), "rrhf")


def main(argv: list[str]) -> int:
    return online_main(argv, "train rrhf", "RRHF: rank k sampled responses by reward; ranking + SFT loss.",
                       RRHFJobConfig, make_algorithm, "rrhf")
