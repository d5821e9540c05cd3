"""Killing actors during real runs: the run finishes, every step trains exactly once on
complete groups, and the samplers end on the final policy version."""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest
import ray
from ray import cloudpickle

from raylign.algorithms.rrhf import RRHFConfig
from raylign.algorithms.rrhf_job import RRHFAlgorithm
from raylign.engine.loop import EngineConfig, run_engine
from raylign.engine.policy_trainer import TrainerConfig
from raylign.sampling.actor import create_samplers
from raylign.sampling.base import SamplingConfig
from raylign.scoring.base import RewardConfig, RewardSource
from raylign.scoring.sources import make_reward_source

pytestmark = [pytest.mark.integration, pytest.mark.slow]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PROMPTS = [{"prompt_id": f"p{i}", "prompt": t, "messages": [{"role": "user", "content": t}]}
           for i, t in enumerate(["capital of France?", "write a poem", "hello", "tell me a joke"])]
STEPS, PER_STEP, SAMPLES = 4, 4, 2


class PreferShort(RewardSource):
    def score(self, rows):
        return [-float(len(r["response_token_ids"])) for r in rows]


def _kill_after_first_step(metrics_path, kill) -> threading.Event:
    """Kill once step 1 is logged (the trainer has pushed weights at least once)."""
    done = threading.Event()

    def watch():
        deadline = time.time() + 600
        while time.time() < deadline:
            if metrics_path.exists() and metrics_path.read_text().strip():
                kill()
                done.set()
                return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    return done


def _check_complete(result):
    metrics = [json.loads(line) for line in open(result["metrics"])]
    assert [m["step"] for m in metrics] == list(range(1, STEPS + 1))  # each step trained once
    assert all(m["rollouts"] == PER_STEP * SAMPLES for m in metrics)  # no prompt lost, none doubled
    assert all(m["units"] == PER_STEP for m in metrics)  # complete groups
    assert result["sampler_versions"] == [STEPS] * len(result["sampler_versions"])
    return metrics


@pytest.fixture
def sampling():
    return SamplingConfig(backend="hf", num_samples=SAMPLES, max_new_tokens=8, num_samplers=2,
                          num_cpus_per_sampler=0.25, max_restarts=2)


def test_killed_sampler_is_restarted_and_served_the_current_weights(ray_cluster, tiny_model_dir, tmp_path, sampling):
    samplers = create_samplers(str(tiny_model_dir), sampling)
    reward = PreferShort()
    killed = _kill_after_first_step(tmp_path / "run" / "metrics.jsonl",
                                    lambda: ray.kill(samplers[0], no_restart=False))
    try:
        engine = EngineConfig(num_iterations=STEPS, prompts_per_step=PER_STEP, max_staleness=1,
                              output_dir=str(tmp_path / "run"),
                              trainer=TrainerConfig(num_workers=1, cpus_per_worker=0.5, learning_rate=5e-3,
                                                    max_length=64))
        result = run_engine(engine, str(tiny_model_dir), PROMPTS, sampling, reward, RRHFAlgorithm(RRHFConfig()),
                            run_name="kill-sampler", samplers=samplers)
    finally:
        samplers.shutdown()
    assert killed.is_set()
    _check_complete(result)


def test_killed_reward_actor_is_restarted_and_asked_again(ray_cluster, tiny_model_dir, tiny_reward_model_dir,
                                                          tmp_path, sampling):
    samplers = create_samplers(str(tiny_model_dir), sampling)
    reward = make_reward_source(RewardConfig(kind="actor", model=str(tiny_reward_model_dir), max_length=64,
                                             num_cpus=0.1, max_restarts=2))
    killed = _kill_after_first_step(tmp_path / "run" / "metrics.jsonl",
                                    lambda: ray.kill(reward.actor, no_restart=False))
    try:
        engine = EngineConfig(num_iterations=STEPS, prompts_per_step=PER_STEP, max_staleness=1,
                              output_dir=str(tmp_path / "run"),
                              trainer=TrainerConfig(num_workers=1, cpus_per_worker=0.5, learning_rate=5e-3,
                                                    max_length=64))
        result = run_engine(engine, str(tiny_model_dir), PROMPTS, sampling, reward, RRHFAlgorithm(RRHFConfig()),
                            run_name="kill-reward", samplers=samplers)
    finally:
        samplers.shutdown()
        reward.close()
    assert killed.is_set()
    _check_complete(result)


def test_killed_train_worker_group_resumes_from_the_last_checkpoint(ray_cluster, tiny_model_dir, tmp_path, sampling):
    """SIGKILL of the Ray Train worker after step 2: FailureConfig restarts the group, which
    continues from the checkpoint of step 2 with the rollouts the buffer kept."""
    import os
    import signal

    from ray._private.state import actors

    def kill_train_worker():
        (pid,) = [a["Pid"] for a in actors().values()
                  if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE"]
        os.kill(pid, signal.SIGKILL)

    metrics_path = tmp_path / "run" / "metrics.jsonl"
    done = threading.Event()

    def watch():
        deadline = time.time() + 600
        while time.time() < deadline:
            if metrics_path.exists() and len(metrics_path.read_text().splitlines()) >= 2:
                kill_train_worker()
                done.set()
                return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    samplers = create_samplers(str(tiny_model_dir), sampling)
    try:
        engine = EngineConfig(num_iterations=STEPS, prompts_per_step=PER_STEP, max_staleness=1,
                              output_dir=str(tmp_path / "run"),
                              trainer=TrainerConfig(num_workers=1, cpus_per_worker=0.5, learning_rate=5e-3,
                                                    max_length=64, save_every=2, max_failures=1))
        result = run_engine(engine, str(tiny_model_dir), PROMPTS, sampling, PreferShort(), RRHFAlgorithm(RRHFConfig()),
                            run_name="kill-trainer", samplers=samplers)
    finally:
        samplers.shutdown()
    assert done.is_set()
    metrics = _check_complete(result)
    assert [m["policy_version"] for m in metrics] == [1, 2, 3, 4]
