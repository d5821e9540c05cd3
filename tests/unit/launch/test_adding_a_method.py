"""Adding a method is one module plus one registration line: the example module of
docs/adding_a_method.md, registered in a test, becomes `raylign train reinforce-example` with a
validated recipe (its own section beside the family's), its help line, and a loss that trains."""

from __future__ import annotations

import pytest
import torch

from raylign.launch import methods
from raylign.launch.methods import ONLINE, Method

LINE = Method("reinforce-example", ONLINE, "tests.unit.launch.example_method:ReinforceAlgorithm",
              "REINFORCE with a batch-mean baseline (the docs' example)", "jobs/reinforce_example.yaml")


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(methods, "METHODS", (*methods.METHODS, LINE))
    return LINE


def test_the_registration_line_makes_a_train_command(registered, capsys):
    from raylign.cli import main

    assert main(["--help"]) == 0
    assert "train reinforce-example" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:  # argparse's own --help
        main(["train", "reinforce-example", "--help"])
    assert done.value.code == 0


def test_its_recipe_composes_the_family_and_its_own_section(registered, capsys):
    from raylign.config import ConfigError, load_config
    from raylign.launch.recipes import recipe_class

    recipe = load_config(recipe_class("reinforce-example"), None,
                         ["reinforce.kl_coef=0.1", "engine.trainer.optim.lr=1e-4"])
    assert recipe.reinforce.kl_coef == 0.1 and recipe.engine.output_dir == "runs/reinforce-example"
    with pytest.raises(ConfigError, match="unknown key 'reinforce.baselin'"):
        load_config(recipe_class("reinforce-example"), None, ["reinforce.baselin=false"])


def test_its_loss_is_built_from_the_core_and_trains(registered, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from raylign.algorithms.base import TrainContext
    from raylign.launch.recipes import recipe_class
    from raylign.models.chat import load_tokenizer

    algorithm = registered.load().from_recipe(recipe_class("reinforce-example")())
    tokenizer = load_tokenizer(str(tiny_model_dir))
    prompt = tokenizer("Say hi.", add_special_tokens=False)["input_ids"]
    rows = [{"prompt_token_ids": prompt, "response_token_ids": tokenizer(f"hi {i}", add_special_tokens=False)["input_ids"],
             "reward": float(i), "source": "policy"} for i in range(4)]
    units, metrics = algorithm.select(rows, 0)
    assert metrics["baseline"] == 1.5 and [u["advantage"] for u in units] == [-1.5, -0.5, 0.5, 1.5]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    loss_sum, weight, _ = algorithm.loss(model, units, TrainContext(tokenizer.pad_token_id, 64))
    loss_sum.backward()
    assert weight == sum(algorithm.unit_weight(u) for u in units)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
