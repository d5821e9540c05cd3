"""`raylign train rrhf`: RRHF on the distributed engine (sample k, score, rank + SFT, sync)."""

from __future__ import annotations

import functools
import json
from typing import Literal

from raylign.algorithms.rrhf import RRHFConfig, rrhf_group_loss
from raylign.config import StrictModel, dump_config, load_config
from raylign.engine.loop import EngineConfig, run_engine
from raylign.sampling.base import SamplingConfig
from raylign.scoring.base import RewardConfig
from raylign.scoring.reference import ReferenceConfig, create_reference
from raylign.smoke import BUNDLED_PROMPTS


class DataConfig(StrictModel):
    path: str = str(BUNDLED_PROMPTS)
    format: str = "auto"
    # preference rows carry the dataset's chosen/rejected answers (used as extra candidates)
    kind: Literal["prompt", "preference"] = "preference"
    on_error: Literal["raise", "skip"] = "skip"
    limit: int | None = None


class RRHFJobConfig(StrictModel):
    model: str = "SmolLM2-135M-Instruct"
    ray_address: str | None = None
    data: DataConfig = DataConfig()
    sampling: SamplingConfig = SamplingConfig()
    reward: RewardConfig = RewardConfig(kind="actor", model="hh-rm-smollm2")
    rrhf: RRHFConfig = RRHFConfig()
    reference: ReferenceConfig = ReferenceConfig()
    engine: EngineConfig = EngineConfig()


def run(config: RRHFJobConfig) -> dict:
    import ray

    from raylign.data.adapters import load_rows
    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray
    from raylign.scoring.sources import make_reward_source

    model_path = str(resolve_model(config.model))
    prompts = load_rows(config.data.path, config.data.kind, config.data.format, config.data.limit, config.data.on_error)
    init_ray(config.ray_address)
    reward = make_reward_source(config.reward)
    reference = create_reference(config.reference, model_path, config.engine.trainer.max_length)
    try:
        return run_engine(
            config.engine,
            model_path,
            prompts,
            config.sampling,
            reward,
            functools.partial(
                rrhf_group_loss,
                rrhf_weight=config.rrhf.rrhf_weight,
                length_penalty=config.rrhf.length_penalty,
                kl_coef=config.reference.kl_coef,
            ),
            run_name="rrhf",
            dataset_responses=config.rrhf.include_dataset_responses and config.data.kind == "preference",
            reference=reference,
        )
    finally:
        reward.close()
        if reference is not None:
            ray.kill(reference)


def main(argv: list[str]) -> int:
    from raylign.cli import recipe_parser

    args = recipe_parser("train rrhf", "RRHF: rank k sampled responses by reward; ranking + SFT loss.").parse_args(argv)
    config = load_config(RRHFJobConfig, args.config, args.overrides)
    print(dump_config(config), flush=True)
    result = run(config)
    for example in result["examples"]:
        print(f"\n--- best sample of the last step (policy v{example['policy_version']}, {example['sampler']}, "
              f"reward {example['reward']:.3f})\nPROMPT: {example['prompt'][-300:]}\nRESPONSE: {example['response']}")
    print(json.dumps({k: v for k, v in result.items() if k not in ("last", "examples")}, indent=2))
    print(f"final policy (HF format): {result['checkpoint']}")
    return 0
