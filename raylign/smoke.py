"""The smoke job: local Ray, the default model in a sampler actor, a few generations."""

from __future__ import annotations

from raylign.config import InputPath, ModelName, RayAddress, StrictModel
from raylign.data.adapters import load_rows
from raylign.data.bundled import BUNDLED_HH
from raylign.sampling.base import SamplingConfig


class SmokeConfig(StrictModel):
    model: ModelName = "SmolLM2-135M-Instruct"
    prompts: InputPath = str(BUNDLED_HH)
    prompt_format: str = "auto"
    num_prompts: int = 2
    ray_address: RayAddress | None = None
    sampling: SamplingConfig = SamplingConfig(num_samples=2, max_new_tokens=48, num_samplers=1, temperature=0.7)


def run(config: SmokeConfig) -> list[dict]:
    import ray

    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray
    from raylign.sampling.actor import create_samplers

    model_path = resolve_model(config.model)
    rows = load_rows(config.prompts, "prompt", config.prompt_format, limit=config.num_prompts)
    init_ray(config.ray_address)
    samplers = create_samplers(str(model_path), config.sampling, count=1)
    try:
        rollouts = ray.get(samplers[0].generate.remote(rows))
    finally:
        samplers.shutdown()
    for rollout in rollouts:
        print(f"\n=== prompt {rollout['prompt_id']} sample {rollout['sample_index']} "
              f"(policy v{rollout['policy_version']}, {rollout['sampler']}, {config.sampling.backend})")
        print(f"PROMPT: {rollout['messages'][-1]['content'][:200]}")
        print(f"RESPONSE: {rollout['response']}")
    return rollouts


def main(argv: list[str]) -> int:
    from raylign.recipes import run_recipe

    rollouts = run_recipe(argv, "smoke", "Generate from the default model inside a Ray sampler actor.", SmokeConfig, run)
    return 0 if rollouts else 1
