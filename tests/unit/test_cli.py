import subprocess
import sys

import pytest

from raylign.cli import COMMANDS, main
from raylign.models.local import ModelNotFoundError
from raylign.models.registry import resolve_model


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for words, _, _ in COMMANDS:
        assert " ".join(words) in out


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "raylign.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "train rrhf" in result.stdout


def test_misspelled_override_fails_naming_the_key(capsys):
    assert main(["smoke", "sampling.temprature=0.5"]) == 2
    assert "unknown key 'sampling.temprature'" in capsys.readouterr().err


def test_misspelled_key_in_recipe_file(tmp_path, capsys):
    recipe = tmp_path / "rrhf_bad.yaml"
    recipe.write_text("engine:\n  num_iteratons: 3\n")
    assert main(["train", "rrhf", "--config", str(recipe)]) == 2
    assert "unknown key 'engine.num_iteratons'" in capsys.readouterr().err


def test_unknown_command(capsys):
    assert main(["trian", "rrhf"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_model_not_local_says_what_to_do(tmp_path):
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        resolve_model("meta-llama/Llama-3.1-8B-Instruct")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(tmp_path / "empty")


def test_local_path_resolves(tiny_model_dir):
    assert resolve_model(tiny_model_dir) == tiny_model_dir.resolve()


def test_every_command_target_imports():
    import importlib

    for words, target, _ in COMMANDS:
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), " ".join(words)
