"""The offline trainer on a real local Ray cluster with 2 Ray Train workers and the tiny model:
DPO and SFT lower their loss and change the weights; an SFT worker group whose worker
process dies mid-run resumes from its last checkpoint and finishes the planned steps."""

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch
from ray import cloudpickle

from raylign.data.bundled import BUNDLED_HH
from tests.helpers import method_recipe

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import test modules

COMMON = {"trainable": "all", "num_workers": 2, "cpus_per_worker": 1, "batch_size": 4, "log_every": 1,
          "eval_every": 0, "keep_best": False}


def _weights(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def _train_losses(out_dir) -> list[float]:
    lines = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if r["split"] == "train"]


def _changed(before: dict, after: dict) -> int:
    return sum(not torch.allclose(before[k], after[k]) for k in before if k in after)


@pytest.mark.slow
def test_dpo_two_workers_loss_falls_and_accuracy_rises(ray_cluster, tiny_model_dir, tmp_path):
    from raylign.algorithms.dpo import DPOObjective
    from raylign.training.trainer import run_offline

    config = method_recipe("dpo", {
        **COMMON, "model": str(tiny_model_dir), "output_dir": str(tmp_path / "dpo"), "epochs": 3,
        "optim": {"lr": 2e-3, "warmup_ratio": 0.0, "schedule": "constant"},
        "data": {"path": str(BUNDLED_HH), "limit": 24, "max_length": 64, "test_fraction": 0.0,
                 "validation_fraction": 0.0},
        "dpo": {"beta": 0.5},
    })
    summary = run_offline(config, DPOObjective(config))
    losses = _train_losses(tmp_path / "dpo")
    assert summary["counts"]["train"]["pairs"] == 24
    assert losses[0] == pytest.approx(0.6931, abs=0.02)  # policy == reference at step 1: -log sigma(0)
    assert losses[-1] < 0.6
    assert _changed(_weights(tiny_model_dir), _weights(tmp_path / "dpo")) > 0


def _dying_objective(marker: Path, die_at_call: int):
    from raylign.algorithms.sft import SFTObjective

    class DyingSFT(SFTObjective):
        calls = 0

        def loss(self, module, data):
            DyingSFT.calls += 1
            if DyingSFT.calls == die_at_call and not marker.exists():
                marker.write_text("died")
                time.sleep(3)  # let the controller collect the last checkpoint report first
                os._exit(1)  # a real worker failure: the process is gone
            return super().loss(module, data)

    return DyingSFT


@pytest.mark.slow
def test_sft_two_workers_learn_and_resume_after_a_killed_worker(ray_cluster, tiny_model_dir, tmp_path):
    from raylign.training.trainer import run_offline

    data = tmp_path / "demos.jsonl"
    demos = [{"instruction": f"Say the number {i}.", "input": "", "output": f"The number is {i}."} for i in range(24)]
    data.write_text("".join(json.dumps(d) + "\n" for d in demos))
    config = method_recipe("sft", {
        **COMMON, "model": str(tiny_model_dir), "output_dir": str(tmp_path / "sft"), "epochs": 3,
        "optim": {"lr": 3e-3, "warmup_ratio": 0.0, "schedule": "constant"},
        "save_every": 2, "max_failures": 1,
        "data": {"path": str(data), "format": "alpaca", "max_length": 64, "test_fraction": 0.0,
                 "validation_fraction": 0.0},
    })
    marker = tmp_path / "died"
    # 12 rows per worker, 4 per micro-batch, 3 epochs: 9 steps; the 7th loss call (step 7) kills
    # the worker process after the step-6 checkpoint.
    summary = run_offline(config, _dying_objective(marker, die_at_call=7)(config))
    assert marker.exists(), "the worker never died: the test did not exercise a failure"
    assert summary["step"] == 9 and summary["resumed_from"] in (2, 4, 6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    resumed = summary["resumed_from"]
    assert steps[:6] == [1, 2, 3, 4, 5, 6] and steps[-(9 - resumed):] == list(range(resumed + 1, 10))
    losses = _train_losses(tmp_path / "sft")
    assert losses[-1] < 0.7 * losses[0]
    assert _changed(_weights(tiny_model_dir), _weights(tmp_path / "sft")) > 0


@pytest.mark.slow
def test_a_failed_run_resumes_from_its_checkpoint_when_rerun(ray_cluster, tiny_model_dir, tmp_path):
    """The driver-level case: the run fails outright (no retries left); the same command again
    finds the run's checkpoint by its recipe-derived name and continues from it."""
    from raylign.algorithms.sft import SFTObjective
    from raylign.training.trainer import run_offline

    data = tmp_path / "demos.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i}.", "input": "", "output": f"{i}."}) + "\n"
                            for i in range(8)))
    config = method_recipe("sft", {
        **COMMON, "num_workers": 1, "model": str(tiny_model_dir), "output_dir": str(tmp_path / "sft"), "epochs": 2,
        "save_every": 2, "max_failures": 0,
        "data": {"path": str(data), "format": "alpaca", "max_length": 32, "test_fraction": 0.0,
                 "validation_fraction": 0.0},
    })
    marker = tmp_path / "died"
    # 8 rows, 4 per step, 2 epochs: 4 steps; the 3rd loss call kills the worker after the step-2 checkpoint
    with pytest.raises(Exception):
        run_offline(config, _dying_objective(marker, die_at_call=3)(config))
    assert marker.exists() and not (tmp_path / "sft" / "config.json").exists()
    summary = run_offline(config, SFTObjective(config))
    assert summary["step"] == 4 and summary["resumed_from"] == 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert not (tmp_path / "sft" / ".ray_train").exists()
