"""Recipes: every shipped one validates against its class, a method's class composes its family's
sections with its own, and old keys keep working for one release with a deprecation line."""

from __future__ import annotations

from pathlib import Path

import pytest

from raylign.config import ConfigError, load_config
from raylign.launch.recipes import recipe_class, recipe_class_for

JOBS = Path(__file__).resolve().parents[3] / "jobs"


def test_shipped_recipes_validate_without_deprecated_keys(capsys):
    recipes = sorted(JOBS.glob("*.yaml")) + sorted((JOBS / "study").glob("*.yaml"))
    assert len(recipes) > 15
    for path in recipes:
        model = recipe_class_for(path)
        assert model is not None, f"{path.name}: no config class for this recipe prefix"
        load_config(model, path)
    assert "deprecated" not in capsys.readouterr().err, "a shipped recipe still uses an old key"


def test_method_defaults_and_sections():
    dpo = recipe_class("dpo")()
    assert (dpo.optim.lr, dpo.data.format, dpo.reference.num_cpus, dpo.output_dir) == (5e-6, "hh", 1.0, "runs/dpo")
    assert dpo.optim.schedule == "linear" and dpo.dpo.select_by == "reward_accuracy"
    cut = recipe_class("cut")()
    assert (cut.trainable, cut.lora.r, cut.optim.schedule, cut.heldout.negatives) == ("lora", 16, "cosine", 64)
    grpo = recipe_class("grpo")()
    assert grpo.engine.trainer.optim.schedule == "constant" and grpo.engine.trainer.epochs is None
    assert grpo.engine.output_dir == "runs/grpo" and grpo.data.on_error == "raise"
    with pytest.raises(ConfigError, match="unknown key 'dpo.betta'"):
        load_config(recipe_class("dpo"), None, ["dpo.betta=0.2"])


def test_old_keys_move_to_their_new_home_with_a_deprecation_line(tmp_path, capsys):
    path = tmp_path / "grpo_old.yaml"
    path.write_text("grpo:\n  epochs: 2\n  kl_coef: 0.02\nreference:\n  kl_coef: 0.1\n"
                    "engine:\n  trainer:\n    learning_rate: 3.0e-4\n    trainable_layers: 4\n")
    recipe = load_config(recipe_class("grpo"), path)
    trainer = recipe.engine.trainer
    assert (trainer.epochs, trainer.optim.lr, trainer.trainable, trainer.top_layers) == (2, 3e-4, "top_layers", 4)
    assert recipe.grpo.kl_coef == 0.02  # reference.kl_coef is retired for GRPO: its own section holds it
    err = capsys.readouterr().err
    assert "'grpo.epochs' is deprecated: use 'engine.trainer.epochs'" in err
    assert "'engine.trainer.learning_rate' is deprecated: use 'engine.trainer.optim.lr'" in err
    assert "'reference.kl_coef' is no longer read: the KL coefficient is grpo.kl_coef" in err
    rrhf = load_config(recipe_class("rrhf"), None, ["reference.kl_coef=0.05", "engine.trainer.trainable_layers=null"])
    assert rrhf.rrhf.kl_coef == 0.05 and rrhf.engine.trainer.trainable == "all"
    offline = load_config(recipe_class("rm"), None, ["lr=3e-5", "head_lr=1e-4", "export_delta=x.safetensors"])
    assert (offline.optim.lr, offline.rm.head_lr, offline.rm.export_delta) == (3e-5, 1e-4, "x.safetensors")


def test_when_old_and_new_keys_are_both_set_the_new_one_wins(capsys):
    recipe = load_config(recipe_class("ppo"), None, ["ppo.ppo_epochs=4", "engine.trainer.epochs=1"])
    assert recipe.engine.trainer.epochs == 1
    assert "'ppo.ppo_epochs' is ignored: 'engine.trainer.epochs' is set" in capsys.readouterr().err
