"""An online method on the engine with 2 Ray Train workers (tiny model, local Ray cluster): PPO with
a separate critic (policy + critic in one module; its old log-probs agree with the samplers')
trains, and the samplers end up serving exactly the trained weights. Every method's
single-worker run through `raylign train` is pinned by tests/invariant."""

import json

import pytest
import ray
import torch

from raylign.engine.config import EngineConfig
from raylign.engine.loop import run_engine
from raylign.sampling.actor import create_samplers
from raylign.sampling.base import SamplingConfig
from raylign.scoring.reference import ReferenceConfig, create_reference
from tests.helpers import MAX_LENGTH, PROMPTS, PreferLength, greedy_logprobs, online_case

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("method", ["ppo_separate_critic"])
def test_online_method_trains_and_syncs(ray_cluster, tiny_model_dir, tmp_path, method):
    from transformers import AutoModelForCausalLM

    workers = 2
    algorithm, recipe = online_case(method, {"num_workers": workers, "cpus_per_worker": 0.5, "optim": {"lr": 5e-3},
                                             "micro_batch_size": 2})
    output_dir = tmp_path / "run"
    model_path = algorithm.prepare_model(str(tiny_model_dir), str(output_dir))
    sampling = SamplingConfig(backend="hf", num_samples=4, max_new_tokens=10, num_samplers=1, temperature=1.0)
    samplers = create_samplers(model_path, sampling)
    reference = create_reference(ReferenceConfig(num_cpus=0.1), model_path, MAX_LENGTH, algorithm.needs_reference)
    engine = EngineConfig(num_iterations=2, prompts_per_step=3, pipeline="sequential", output_dir=str(output_dir),
                          trainer=recipe.engine.trainer)
    try:
        result = run_engine(engine, model_path, PROMPTS, sampling, PreferLength(per_char=0.01), algorithm, run_name=f"t-{method}",
                            samplers=samplers, reference=reference)
        assert result["sampler_versions"] == [2]
        metrics = [json.loads(line) for line in open(result["metrics"])]
        assert [m["step"] for m in metrics] == [1, 2]
        assert all(m["loss"] == m["loss"] and m["optimizer_steps"] >= 1 for m in metrics)  # not NaN
        if method.startswith("ppo"):
            assert {"kl", "value_loss", "clipfrac", "sampler_logprob_abs_diff"} <= set(metrics[0])
            # The trainer's old log-probs agree with what the samplers reported (fp32, same weights).
            assert metrics[0]["sampler_logprob_abs_diff"] < 2e-3
        # The final checkpoint is plain HF and the sampler serves exactly it.
        trained = AutoModelForCausalLM.from_pretrained(result["checkpoint"], dtype=torch.float32)
        initial = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        row = ray.get(samplers[0].generate.remote(PROMPTS[:1], 1))[0]
        assert row["policy_version"] == 2
        served = row["logprobs"]
        assert served == pytest.approx(greedy_logprobs(trained, row["prompt_token_ids"], row["response_token_ids"]), abs=2e-3)
        assert served != pytest.approx(greedy_logprobs(initial, row["prompt_token_ids"], row["response_token_ids"]), abs=2e-3)
    finally:
        samplers.shutdown()
        if reference is not None:
            ray.kill(reference)
