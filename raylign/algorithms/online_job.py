"""What every online recipe shares: the roles' config sections and one way to run them.

A method's job module (`rrhf_job.py`, `ppo_job.py`, ...) adds its own section to
`OnlineJobConfig` and builds its `Algorithm`; `run_online` resolves the model, checks the
prompt file, starts Ray and the roles, and hands everything to the engine, which reads the
prompts with Ray Data as the run goes (`raylign.data.prompt_corpus`).
"""

from __future__ import annotations

import json
from typing import Callable, Literal

from raylign.algorithms.base import Algorithm
from raylign.config import StrictModel
from raylign.data.bundled import BUNDLED_HH
from raylign.data.prompt_corpus import PromptCorpus
from raylign.engine.loop import EngineConfig, run_engine
from raylign.sampling.base import SamplingConfig
from raylign.scoring.base import RewardConfig
from raylign.scoring.reference import ReferenceConfig, create_reference


class DataConfig(StrictModel):
    path: str = str(BUNDLED_HH)
    format: str = "auto"
    # preference rows carry the dataset's chosen/rejected answers (RRHF uses them as extra candidates)
    kind: Literal["prompt", "preference"] = "preference"
    on_error: Literal["raise", "skip"] = "skip"
    limit: int | None = None
    # keep only rows whose seeded prompt hash falls in this split (same split as `raylign train rm`)
    split: Literal["all", "train", "validation", "test"] = "all"
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    split_seed: int = 0


class OnlineJobConfig(StrictModel):
    model: str = "SmolLM2-135M-Instruct"
    ray_address: str | None = None
    data: DataConfig = DataConfig()
    sampling: SamplingConfig = SamplingConfig()
    reward: RewardConfig = RewardConfig(kind="actor", model="hh-rm-smollm2")
    reference: ReferenceConfig = ReferenceConfig()
    engine: EngineConfig = EngineConfig()


def load_prompts(data: DataConfig) -> list[dict]:
    """All the prompts as a list, for evaluation on a few of them; training streams them instead."""
    from raylign.data.adapters import load_rows

    rows = load_rows(data.path, data.kind, data.format, None if data.split != "all" else data.limit, data.on_error)
    if data.split != "all":
        from raylign.data.splits import select_split

        rows = select_split(rows, data.split, data.test_fraction, data.validation_fraction, data.split_seed)
        rows = rows[: data.limit] if data.limit else rows
    if not rows:
        from raylign.data.readers import DataError

        raise DataError(f"{data.path}: no prompts in split '{data.split}'")
    return rows


def check_reward_source(reward: RewardConfig) -> None:
    """The reward model exists (a shipped name is built into the cache now, not 70 s into
    the run) and the other kinds say what they need."""
    from raylign.config import ConfigError

    if reward.kind == "actor":
        if not reward.model:
            raise ConfigError("reward.model: required for reward.kind 'actor'")
        from raylign.models.registry import resolve_model

        resolve_model(reward.model)
    elif reward.kind == "http" and not reward.url:
        raise ConfigError("reward.url: required for reward.kind 'http'")
    elif reward.kind == "function":
        from raylign.scoring.sources import load_callable

        try:  # the same import the reward source does, so a typo fails here, not in a worker
            load_callable(reward.function or "")
        except ValueError as err:
            raise ConfigError(str(err)) from None


def run_online(config: OnlineJobConfig, algorithm: Algorithm, run_name: str) -> dict:
    import ray

    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray
    from raylign.scoring.sources import make_reward_source

    # Everything that can be wrong with the inputs is found here, before Ray and the models start
    # (an empty split only shows after a pass over the file: the engine reports it before the samplers start).
    model_path = str(resolve_model(config.model))
    prompts = PromptCorpus.from_config(config.data).check()
    check_reward_source(config.reward)
    init_ray(config.ray_address)
    model_path = algorithm.prepare_model(model_path, config.engine.output_dir)
    reward = make_reward_source(config.reward)
    reference = create_reference(config.reference, model_path, config.engine.trainer.max_length, algorithm.needs_reference)
    try:
        return run_engine(config.engine, model_path, prompts, config.sampling, reward, algorithm,
                          run_name=run_name, reference=reference)
    finally:
        reward.close()
        if reference is not None:
            ray.kill(reference)


def online_main(argv: list[str], command: str, description: str, config_cls: type[OnlineJobConfig],
                make_algorithm: Callable[[OnlineJobConfig], Algorithm], run_name: str) -> int:
    from raylign.cli import run_recipe

    result = run_recipe(argv, command, description, config_cls,
                        lambda config: run_online(config, make_algorithm(config), run_name))
    for example in result["examples"]:
        print(f"\n--- best sample of the last step (policy v{example['policy_version']}, {example['sampler']}, "
              f"reward {example['reward']:.3f})\nPROMPT: {example['prompt'][-300:]}\nRESPONSE: {example['response']}")
    print(json.dumps({k: v for k, v in result.items() if k not in ("last", "examples")}, indent=2))
    from raylign.metrics import read_metrics, trend_summary

    trend = trend_summary(read_metrics(result["metrics"]))
    if trend:
        print(f"reward curve: {trend} (plot: {result['plot']})")
    print(f"final policy (HF format): {result['checkpoint']}")
    return 0
