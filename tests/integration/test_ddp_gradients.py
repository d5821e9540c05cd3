"""Data-parallel correctness of the shared step core: 2 Ray Train workers take exactly the
step 1 worker takes on the same units, with uneven shards, several micro-batches per rank,
and a rank that has no unit at all (it trains a filler at weight 0)."""

import sys

import pytest
import torch
from ray import cloudpickle

from raylign.algorithms.rrhf import RRHFAlgorithm, RRHFConfig

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def make_units(num_groups: int, k: int = 3):
    generator = torch.Generator().manual_seed(7)
    units = []
    for g in range(num_groups):
        prompt = torch.randint(5, 60, (3 + g % 3,), generator=generator).tolist()
        group = []
        for i in range(k):
            response = torch.randint(5, 60, (2 + (g + i) % 4,), generator=generator).tolist()
            group.append({"prompt_uid": f"0:{g}", "prompt_token_ids": prompt, "response_token_ids": response,
                          "reward": float((g * 7 + i * 3) % 5), "source": "policy", "policy_version": 0})
        units.append(group)
    return units


def one_step(config: dict) -> None:
    """Ray Train worker: for each case, one SGD step (lr 1, no clipping) of a fresh model through
    `train_on_units`; rank 0 saves each parameter change, which is minus the global gradient.
    The cases share one worker group: starting a group costs more than the steps."""
    import ray.train
    from transformers import AutoModelForCausalLM

    from raylign.algorithms.base import TrainContext
    from raylign.engine.buffer import shard_units
    from raylign.engine.policy_trainer import train_on_units, wrap_data_parallel

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    results = []
    for units, micro in config["cases"]:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(config["model"], dtype=torch.float32)
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        module = wrap_data_parallel(model)
        optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
        algorithm = RRHFAlgorithm(RRHFConfig())
        shard = shard_units(units, rank, world)
        metrics = train_on_units(module, optimizer, algorithm, shard["units"], shard["filler"], TrainContext(0, 64),
                                 (1, 1, micro), False, 1e9, 0)
        inner = getattr(module, "module", module)
        results.append({"delta": {k: before[k] - v.detach() for k, v in inner.state_dict().items()},
                        "metrics": metrics})
    if rank == 0:
        torch.save(results, config["out"])


def run_workers(num_workers: int, model: str, cases, out: str) -> list[dict]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    TorchTrainer(
        one_step,
        train_loop_config={"model": model, "cases": cases, "out": out},
        scaling_config=ScalingConfig(num_workers=num_workers, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(storage_path=str(__import__("pathlib").Path(out).parent / "ray_train")),
    ).fit()
    return torch.load(out, weights_only=False)


CASES = [(5, 2), (1, 1)]  # (groups, micro-batches): uneven shards; a rank with no unit at all


def test_two_workers_take_the_one_worker_step(ray_cluster, tiny_model_dir, tmp_path):
    cases = [(make_units(num_groups), micro) for num_groups, micro in CASES]
    singles = run_workers(1, str(tiny_model_dir), cases, str(tmp_path / "one.pt"))
    doubles = run_workers(2, str(tiny_model_dir), cases, str(tmp_path / "two.pt"))
    for (num_groups, micro), single, double in zip(CASES, singles, doubles):
        moved = 0
        for name, delta in single["delta"].items():
            assert torch.allclose(delta, double["delta"][name], atol=2e-6, rtol=1e-4), (num_groups, micro, name)
            moved += int(delta.abs().max() > 0)
        assert moved > 0  # the step did change the weights
        assert single["metrics"]["loss"] == pytest.approx(double["metrics"]["loss"], rel=1e-5)
        assert single["metrics"]["global_weight"] == double["metrics"]["global_weight"] == num_groups
