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

from raylign.algorithms.rrhf import RRHFAlgorithm, RRHFConfig
from raylign.engine.config import EngineConfig, TrainerConfig
from raylign.engine.loop import run_engine
from raylign.sampling.actor import create_samplers
from raylign.sampling.base import SamplingConfig
from raylign.scoring.base import RewardConfig
from raylign.scoring.sources import make_reward_source
from tests.helpers import PROMPTS, PreferShort

pytestmark = [pytest.mark.integration, pytest.mark.slow]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

STEPS, PER_STEP, SAMPLES = 6, 4, 2


def _kill_after_version(samplers, kill, version: int = 1) -> threading.Event:
    """Kill as soon as the samplers serve `version` (the trainer has pushed weights), while
    most steps are still to come. (Watching metrics.jsonl raced: its rows can be flushed
    late, after the last step, on a loaded machine.)"""
    done = threading.Event()

    def watch():
        deadline = time.time() + 600
        while time.time() < deadline:
            if ray.get(samplers[-1].policy_version.remote()) >= version:
                kill(samplers)
                done.set()
                return
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()
    return done


def _run_killing(tmp_path, model_dir, sampling, reward, kill, name: str, kill_after: int = 1, **trainer):
    """A real streaming RRHF run on the tiny model during which `kill(samplers)` strikes."""
    samplers = create_samplers(str(model_dir), sampling)
    killed = _kill_after_version(samplers, kill, kill_after)
    try:
        engine = EngineConfig(num_iterations=STEPS, prompts_per_step=PER_STEP, max_staleness=1,
                              output_dir=str(tmp_path / "run"),
                              trainer=TrainerConfig(num_workers=1, cpus_per_worker=0.5, optim={"lr": 5e-3},
                                                    max_length=64, **trainer))
        result = run_engine(engine, str(model_dir), PROMPTS, sampling, reward, RRHFAlgorithm(RRHFConfig()),
                            run_name=name, samplers=samplers)
    finally:
        samplers.shutdown()
    assert killed.is_set()
    return _check_complete(result)


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


def test_killed_sampler_and_reward_actor_are_restarted(ray_cluster, tiny_model_dir, tiny_reward_model_dir,
                                                       tmp_path, sampling):
    """A sampler and the reward actor killed in the same step: both come back, the sampler is
    served the current weights, and the unfinished prompts are sampled and scored again."""
    reward = make_reward_source(RewardConfig(kind="actor", model=str(tiny_reward_model_dir), max_length=64,
                                             num_cpus=0.1, max_restarts=2))

    def kill_both(samplers):
        ray.kill(samplers[0], no_restart=False)
        ray.kill(reward.actor, no_restart=False)

    try:
        _run_killing(tmp_path, tiny_model_dir, sampling, reward, kill_both, "kill-sampler-and-reward")
    finally:
        reward.close()


def test_killed_train_worker_group_resumes_from_the_last_checkpoint(ray_cluster, tiny_model_dir, tmp_path, sampling):
    """SIGKILL of the Ray Train worker after its push of step 2: FailureConfig restarts the group, which
    continues from the checkpoint of step 2 with the rollouts the buffer kept."""
    import os
    import signal

    from ray._private.state import actors

    storage = tmp_path / "run" / "ray_train" / "kill-trainer"

    def kill_train_worker(samplers):
        (pid,) = [a["Pid"] for a in actors().values()
                  if a["ActorClassName"] == "RayTrainWorker" and a["State"] == "ALIVE"]
        os.kill(pid, signal.SIGKILL)

    metrics = _run_killing(tmp_path, tiny_model_dir, sampling, PreferShort(), kill_train_worker, "kill-trainer",
                           kill_after=2, save_every=2, max_failures=1)
    assert [m["policy_version"] for m in metrics] == list(range(1, STEPS + 1))
    # the new group took the newest checkpoint (optimizer, RNG, step, version, data position)
    (resume,) = [json.loads(line) for line in (tmp_path / "run" / "resumes.jsonl").read_text().splitlines()]
    assert resume["step"] in (2, 4) and resume["policy_version"] == resume["step"]
    # Ray Train's copy, or latest/ when the worker died before the controller collected that report
    assert resume["source"] in ("ray.train.get_checkpoint()", "latest/")
    # the newest copy in Ray Train's storage (one killed before the controller took it stays beside the kept one)
    newest = max(p for p in storage.glob("checkpoint_*") if p.is_dir())
    assert (newest / "optimizer.pt").exists() and (newest / "rng_state.pt").exists()
    state = json.loads((newest / "raylign_state.json").read_text())
    assert state["data_position"] == {"next_step": 4, "prompts_per_step": PER_STEP, "prompts_consumed": 4 * PER_STEP}


def test_cli_run_stopped_with_sigterm_resumes(ray_cluster, tiny_model_dir, tmp_path):
    """`raylign train` stopped by SIGTERM after its first checkpoint exits cleanly (130), and
    `engine.resume=true` finishes the run from there without duplicated metrics rows."""
    import os
    import signal
    import subprocess

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p["prompt"]}) + "\n" for p in PROMPTS))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "raylign", "train", "grpo", f"model={tiny_model_dir}", f"data.path={prompts}",
               "data.kind=prompt", "sampling.backend=hf", "sampling.num_samples=2", "sampling.max_new_tokens=6",
               "sampling.num_samplers=1", "reward.kind=function", "reward.function=raylign.scoring.rule_rewards:concise",
               "grpo.kl_coef=0", "engine.num_iterations=6", "engine.prompts_per_step=2", f"engine.output_dir={out}",
               "engine.trainer.save_every=2", "engine.trainer.max_length=64", "engine.trainer.cpus_per_worker=0.5"]
    # both runs join the session's cluster, as `ray job submit` drivers would (no cluster start each)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address}
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "latest" / "raylign_state.json").exists() and first.poll() is None:
        time.sleep(0.5)
    assert first.poll() is None, first.stdout.read()[-3000:]
    first.send_signal(signal.SIGTERM)
    log, _ = first.communicate(timeout=180)
    assert first.returncode == 130, log[-3000:]
    assert "engine.resume=true" in log
    saved = json.loads((out / "latest" / "raylign_state.json").read_text())["step"]
    assert saved >= 2

    second = subprocess.run(command + ["engine.resume=true"], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    assert (out / "final" / "config.json").exists()
