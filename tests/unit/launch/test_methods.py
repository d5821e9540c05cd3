"""Every registered method: its class loads under its name, declares its recipe section, its
recipe validates, and its loss is finite on a tiny batch of the tiny model."""

from __future__ import annotations

import math

import pytest
import torch

from raylign.algorithms.base import Algorithm, TrainContext
from raylign.algorithms.objective import OfflineObjective
from raylign.launch.methods import METHODS, OFFLINE, ONLINE, get_method, method_for_recipe
from tests.helpers import method_recipe


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_method_loads_and_declares_its_recipe(method):
    cls = method.load()
    assert issubclass(cls, Algorithm if method.family == ONLINE else OfflineObjective)
    assert cls.section and cls.config_class is not None
    recipe = method_recipe(method.name)
    assert isinstance(getattr(recipe, cls.section), cls.config_class)
    output = recipe.engine.output_dir if method.family == ONLINE else recipe.output_dir
    assert output == f"runs/{method.name}"
    assert method_for_recipe(method.recipe) is method, f"{method.recipe} is validated by another method"


def test_unknown_method_names_the_known_ones():
    with pytest.raises(KeyError, match="choose from rrhf, ppo"):
        get_method("ppo2")


def _rollouts(tokenizer) -> list[dict]:
    prompt = tokenizer("Say hello.", add_special_tokens=False)["input_ids"]
    rows = []
    for i in range(4):
        response = tokenizer(f"Hello {'there ' * i}friend", add_special_tokens=False)["input_ids"]
        rows.append({"prompt_id": f"p{i // 2}", "prompt_uid": f"0:{i // 2}", "prompt": "Say hello.",
                     "prompt_token_ids": prompt, "response_token_ids": response, "response": "x" * i,
                     "reward": float(i), "source": "policy", "policy_version": 0, "finish_reason": "stop",
                     "logprobs": [], "ref_logprobs": [-1.0] * len(response)})
    return rows


@pytest.mark.parametrize("method", [m for m in METHODS if m.family == ONLINE], ids=lambda m: m.name)
def test_online_method_loss_is_finite_on_a_tiny_batch(method, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from raylign.models.chat import load_tokenizer

    algorithm = method.load().from_recipe(method_recipe(method.name, {"engine": {"trainer": {"max_length": 64}}}))
    model_path = algorithm.prepare_model(str(tiny_model_dir), str(tmp_path / "run"))
    tokenizer = load_tokenizer(model_path)
    units, _ = algorithm.select(_rollouts(tokenizer), step=0)
    assert units, f"{method.name} selected nothing from a batch with distinct rewards"
    module = algorithm.build_module(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32))
    context = TrainContext(tokenizer.pad_token_id, 64)
    context.num_real_units = len(units)
    with torch.no_grad():
        algorithm.prepare(module, units, context)
    loss_sum, weight, metrics = algorithm.loss(module, units, context)
    loss_sum.backward()
    assert math.isfinite(float(loss_sum)) and weight > 0 and all(math.isfinite(v) for v in metrics.values()
                                                                  if isinstance(v, float) and v == v)


def test_every_offline_method_reads_a_row_kind_the_adapters_make():
    from raylign.data.adapters import KINDS

    for method in (m for m in METHODS if m.family == OFFLINE):
        assert method.load().row_kind in KINDS, method.name
