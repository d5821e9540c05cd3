"""Every online method runs real iterations on the engine (tiny model, local Ray cluster)
and its samplers end up serving the trained weights."""

import json
import sys

import pytest
import ray
import torch
from online_method_configs import MAX_LENGTH, METHODS
from ray import cloudpickle

from raylign.engine.loop import EngineConfig, run_engine
from raylign.engine.policy_trainer import TrainerConfig
from raylign.sampling.actor import create_samplers
from raylign.sampling.base import SamplingConfig
from raylign.scoring.base import RewardSource
from raylign.scoring.reference import ReferenceConfig, create_reference

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class PreferLength(RewardSource):
    """Responses close to 6 tokens score best (a reward the tiny model can move)."""

    def score(self, rows):
        return [-abs(len(r["response_token_ids"]) - 6) + 0.01 * len(r["response"]) for r in rows]


PROMPTS = [{"prompt_id": f"p{i}", "prompt": t, "messages": [{"role": "user", "content": t}]}
           for i, t in enumerate(["capital of France?", "write a poem", "hello", "tell me a joke"])]


def dashboard_metric_names() -> set[str]:
    """Metric keys the Grafana dashboard queries (as `ray_raylign_<key>`)."""
    import re
    from pathlib import Path

    dashboard = json.loads((Path(__file__).parents[2] / "cluster" / "grafana_raylign.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    names = {m for e in exprs for m in re.findall(r"ray_raylign_([a-zA-Z0-9_]+)", e)}
    assert names and all(p["type"] == "timeseries" for p in dashboard["panels"])
    return names


def served_logprobs(model, prompt_ids, response_ids):
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(ids).logits.float().log_softmax(-1)[0]
    return [logits[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(response_ids)]


@pytest.mark.parametrize("method", list(METHODS))
def test_online_method_trains_and_syncs(ray_cluster, tiny_model_dir, tmp_path, method):
    from transformers import AutoModelForCausalLM

    algorithm = METHODS[method]()
    workers = 2 if method in ("ppo", "grpo") else 1
    output_dir = tmp_path / "run"
    model_path = algorithm.prepare_model(str(tiny_model_dir), str(output_dir))
    sampling = SamplingConfig(backend="hf", num_samples=4, max_new_tokens=10, num_samplers=1, temperature=1.0)
    samplers = create_samplers(model_path, sampling)
    reference = create_reference(ReferenceConfig(num_cpus=0.1), model_path, MAX_LENGTH, algorithm.needs_reference)
    engine = EngineConfig(num_iterations=2, prompts_per_step=3, pipeline="sequential", output_dir=str(output_dir),
                          trainer=TrainerConfig(num_workers=workers, cpus_per_worker=0.5, learning_rate=5e-3,
                                                max_length=MAX_LENGTH, micro_batch_size=2))
    try:
        result = run_engine(engine, model_path, PROMPTS, sampling, PreferLength(), algorithm, run_name=f"t-{method}",
                            samplers=samplers, reference=reference)
        assert result["sampler_versions"] == [2]
        metrics = [json.loads(line) for line in open(result["metrics"])]
        assert [m["step"] for m in metrics] == [1, 2]
        assert all(m["loss"] == m["loss"] and m["optimizer_steps"] >= 1 for m in metrics)  # not NaN
        if method == "grpo":  # the shipped Grafana dashboard plots only what a run exports
            assert dashboard_metric_names() <= {k for m in metrics for k in m}
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
        assert served == pytest.approx(served_logprobs(trained, row["prompt_token_ids"], row["response_token_ids"]), abs=2e-3)
        assert served != pytest.approx(served_logprobs(initial, row["prompt_token_ids"], row["response_token_ids"]), abs=2e-3)
    finally:
        samplers.shutdown()
        if reference is not None:
            ray.kill(reference)
