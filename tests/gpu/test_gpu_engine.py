"""A real engine run with the trainer on the GPU (NCCL process group, DeepSpeed ZeRO-2 from
the shipped config) and HF samplers on the CPU: the Ray Train worker is killed after its
second step and the restarted group resumes from the DeepSpeed checkpoint. Skipped where
there is no CUDA GPU or no DeepSpeed (CI's CPU machine)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.integration]

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)
pytest.importorskip("deepspeed")

import ray  # noqa: E402
from ray import cloudpickle  # noqa: E402

from raylign.algorithms.rrhf import RRHFAlgorithm, RRHFConfig  # noqa: E402
from raylign.engine.config import EngineConfig, TrainerConfig  # noqa: E402
from raylign.engine.loop import run_engine  # noqa: E402
from raylign.sampling.actor import create_samplers  # noqa: E402
from raylign.sampling.base import SamplingConfig  # noqa: E402
from raylign.scoring.base import RewardSource  # noqa: E402, F401
from tests.helpers import PROMPTS, PreferShort  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SHIPPED_CONFIG = str(Path(__file__).resolve().parents[2] / "cluster" / "deepspeed_zero2.json")
STEPS, PER_STEP, SAMPLES = 4, 4, 2


def _kill_train_worker_at(samplers, version: int) -> threading.Event:
    from ray._private.state import actors

    done = threading.Event()

    def watch():
        deadline = time.time() + 600
        while time.time() < deadline and not done.is_set():
            if ray.get(samplers[-1].policy_version.remote()) >= version:
                (pid,) = [a["Pid"] for a in actors().values()
                          if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE"]
                os.kill(pid, signal.SIGKILL)
                done.set()
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()
    return done


def test_deepspeed_trainer_on_gpu_survives_a_killed_worker(ray_cluster, tiny_model_dir, tmp_path):
    assert ray.cluster_resources().get("GPU", 0) >= 1
    sampling = SamplingConfig(backend="hf", num_samples=SAMPLES, max_new_tokens=8, num_samplers=1,
                              num_cpus_per_sampler=0.5)
    samplers = create_samplers(str(tiny_model_dir), sampling)
    killed = _kill_train_worker_at(samplers, 2)
    output_dir = tmp_path / "run"
    trainer = TrainerConfig(num_workers=1, cpus_per_worker=1, use_gpu=True, optim={"lr": 1e-3}, max_length=64,
                            deepspeed_config=SHIPPED_CONFIG, save_every=2, max_failures=1)
    engine = EngineConfig(num_iterations=STEPS, prompts_per_step=PER_STEP, max_staleness=1,
                          output_dir=str(output_dir), trainer=trainer)
    try:
        result = run_engine(engine, str(tiny_model_dir), PROMPTS, sampling, PreferShort(), RRHFAlgorithm(RRHFConfig()),
                            run_name="gpu-deepspeed-kill", samplers=samplers)
    finally:
        samplers.shutdown()
    assert killed.is_set()
    metrics = [json.loads(line) for line in open(result["metrics"])]
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))  # each step trained once
    assert [m["policy_version"] for m in metrics] == list(range(1, STEPS + 1))
    assert all(m["rollouts"] == PER_STEP * SAMPLES and m["loss"] == m["loss"] for m in metrics)
    assert result["sampler_versions"] == [STEPS]
    (resume,) = [json.loads(line) for line in (output_dir / "resumes.jsonl").read_text().splitlines()]
    assert resume["step"] == 2 and resume["policy_version"] == 2
    checkpoints = [p for p in (output_dir / "ray_train" / "gpu-deepspeed-kill").glob("checkpoint_*") if p.is_dir()]
    newest = max(checkpoints)
    # DeepSpeed's own files (fp32 master weights + optimizer moments) instead of optimizer.pt
    assert (newest / "deepspeed" / "state").is_dir() and not (newest / "optimizer.pt").exists()
    print(json.dumps({"gpu_engine_metrics": metrics, "resume": resume}), flush=True)
