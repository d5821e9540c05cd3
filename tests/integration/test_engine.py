"""The RLHF engine end to end on a real local Ray cluster: RRHF with the tiny model."""

import json

import pytest
import ray
import torch

from raylign.algorithms.rrhf import RRHFAlgorithm, RRHFConfig
from raylign.engine.config import EngineConfig, TrainerConfig
from raylign.engine.loop import run_engine
from raylign.sampling.actor import create_samplers
from raylign.sampling.base import SamplingConfig
from raylign.scoring.reference import ReferenceConfig, create_reference
from tests.helpers import PreferLength, greedy_logprobs, prompt_rows

pytestmark = pytest.mark.integration


PROMPTS = prompt_rows(answers=True)


# the transformers backend and the sequential pipeline run in every tests/invariant online run
@pytest.mark.parametrize("pipeline, staleness, backend", [("streaming", 1, "vllm")])
def test_rrhf_iterations_update_samplers(ray_cluster, tiny_model_dir, tmp_path, pipeline, staleness, backend):
    from transformers import AutoModelForCausalLM

    sampling = SamplingConfig(backend=backend, num_samples=3, max_new_tokens=10, num_samplers=2, dtype="float32")
    samplers = create_samplers(str(tiny_model_dir), sampling)
    # The streaming run also has the reference-model role and a KL term.
    kl_coef = 0.05 if pipeline == "streaming" else 0.0
    reference = create_reference(ReferenceConfig(num_cpus=0.1), str(tiny_model_dir), 64, required=kl_coef > 0)
    engine = EngineConfig(
        num_iterations=3,
        prompts_per_step=2,
        max_staleness=staleness,
        pipeline=pipeline,
        output_dir=str(tmp_path / "run"),
        trainer=TrainerConfig(num_workers=2, cpus_per_worker=0.5, optim={"lr": 5e-3}, max_length=64),
    )
    result = run_engine(
        engine, str(tiny_model_dir), PROMPTS, sampling, PreferLength(),
        RRHFAlgorithm(RRHFConfig(kl_coef=kl_coef), dataset_responses=True), run_name="test-rrhf",
        samplers=samplers, reference=reference,
    )
    # Every sampler advanced to the last policy version.
    assert result["sampler_versions"] == [3, 3]
    assert ray.get([s.policy_version.remote() for s in samplers]) == [3, 3]

    metrics = [json.loads(line) for line in open(result["metrics"])]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for m in metrics:
        assert m["staleness_max"] <= staleness
        assert m["sync_seconds"] > 0 and m["rollouts"] == 2 * (3 + 2)
        assert {"loss", "rank_loss", "sft_loss", "reward_mean", "sample_tokens_per_s", "train_tokens_per_s"} <= set(m)
        if kl_coef:
            assert m["kl"] >= 0.0
    if kl_coef:
        assert metrics[-1]["kl"] > 0.0  # the policy has moved away from the reference
    assert result["plot"] and open(result["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    # The console examples come from the last step (index 2), sampled with version >= 2 - staleness.
    assert result["examples"]
    assert all(e["policy_version"] >= 2 - staleness and isinstance(e["response"], str) for e in result["examples"])

    # The final checkpoint is plain HF and differs from the start; the samplers serve it.
    trained = AutoModelForCausalLM.from_pretrained(result["checkpoint"], dtype=torch.float32)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    rollouts = ray.get(samplers[1].generate.remote(PROMPTS[:1]))
    r = rollouts[0]
    assert r["policy_version"] == 3
    served = r["logprobs"]
    assert served == pytest.approx(greedy_logprobs(trained, r["prompt_token_ids"], r["response_token_ids"]), abs=2e-3)
    assert served != pytest.approx(greedy_logprobs(initial, r["prompt_token_ids"], r["response_token_ids"]), abs=2e-3)
    samplers.shutdown()


@pytest.mark.slow
def test_interrupted_run_resumes(ray_cluster, tiny_model_dir, tmp_path):
    """A run stopped after step 2 of 3 (resumable checkpoint at step 1) continues from there."""
    sampling = SamplingConfig(backend="hf", num_samples=2, max_new_tokens=8, num_samplers=1)
    trainer = TrainerConfig(num_workers=1, cpus_per_worker=0.5, optim={"lr": 5e-3}, max_length=64, save_every=1)
    common = dict(prompts_per_step=2, output_dir=str(tmp_path / "run"), trainer=trainer, pipeline="sequential")
    first = run_engine(EngineConfig(num_iterations=2, **common), str(tiny_model_dir), PROMPTS, sampling,
                       PreferLength(), RRHFAlgorithm(RRHFConfig()), run_name="resume-a")
    assert first["sampler_versions"] == [2]
    state = json.load(open(tmp_path / "run" / "latest" / "raylign_state.json"))
    assert state["step"] == 1  # the last resumable point before the "interruption"
    # stopped after the checkpoint of step 1 but before its row was logged (a SIGTERM can land there)
    metrics_path = tmp_path / "run" / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    lost = next(r for r in rows if r["step"] == 1)
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] != 1))

    second = run_engine(EngineConfig(num_iterations=3, resume=True, **common), str(tiny_model_dir), PROMPTS,
                        sampling, PreferLength(), RRHFAlgorithm(RRHFConfig()), run_name="resume-b")
    assert second["sampler_versions"] == [3]
    rows = [json.loads(line) for line in open(second["metrics"])]
    # run B logged step 1 from the checkpoint's copy, retrained step 2 and replaced its row
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["loss"] == pytest.approx(lost["loss"])
    assert (tmp_path / "run" / "latest" / "optimizer.pt").exists()
    # another run name: Ray Train has no reported checkpoint for it, the trainer reads latest/
    (resume,) = [json.loads(line) for line in (tmp_path / "run" / "resumes.jsonl").read_text().splitlines()]
    assert resume["step"] == 1 and resume["source"] == "latest/"


def test_sampler_group_shutdown_frees_resources(ray_cluster, tiny_model_dir):
    import time

    group = create_samplers(str(tiny_model_dir), SamplingConfig(backend="hf", num_samplers=2, num_cpus_per_sampler=0.5))
    pg = group.placement_group
    reserved = ray.util.placement_group_table(pg)
    assert reserved["state"] == "CREATED" and len(reserved["bundles"]) == 2
    during = ray.available_resources().get("CPU", 0)
    group.shutdown()
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) < during + 1.0 - 1e-6 and time.time() < deadline:
        time.sleep(0.5)
    # Both 0.5-CPU bundles came back (other tests' resources may come back too, never fewer).
    assert ray.available_resources().get("CPU", 0) >= during + 1.0 - 1e-6
    assert ray.util.placement_group_table(pg)["state"] == "REMOVED"


def test_step_with_every_prompt_rejected_fails_clearly(ray_cluster, tiny_model_dir, tmp_path):
    """Rejecting every prompt of a step must end the run with a clear error, not hang the trainer."""
    sampling = SamplingConfig(backend="hf", num_samples=2, max_new_tokens=4, num_samplers=1,
                              max_prompt_tokens=8, over_long_prompt="reject")
    engine = EngineConfig(num_iterations=1, prompts_per_step=2, pipeline="sequential", output_dir=str(tmp_path / "run"),
                          trainer=TrainerConfig(num_workers=1, cpus_per_worker=0.5, max_length=64))
    with pytest.raises(ValueError, match="rejected as over-long"):
        run_engine(engine, str(tiny_model_dir), PROMPTS, sampling, PreferLength(),
                   RRHFAlgorithm(RRHFConfig()), run_name="reject-all")


def test_waiting_stage_stops_when_the_run_ends(ray_cluster):
    """A step waiting for a policy version the trainer will never push gives up as soon as
    the run's buffer closes (before: it polled for an hour), and after its timeout otherwise."""
    import time

    from raylign.engine.buffer import RolloutBuffer
    from raylign.engine.stages import StaleBatchError, StreamStopped, wait_for_version

    @ray.remote(num_cpus=0)
    class StuckSampler:
        def policy_version(self):
            return 0

    sampler, buffer = StuckSampler.remote(), RolloutBuffer.remote()
    with pytest.raises(StaleBatchError, match="staleness_timeout_s"):
        wait_for_version([sampler], 3, timeout_s=0.5, buffer=buffer)
    ray.get(buffer.close.remote())
    started = time.monotonic()
    with pytest.raises(StreamStopped):
        wait_for_version([sampler], 3, timeout_s=600, buffer=buffer)
    assert time.monotonic() - started < 10
