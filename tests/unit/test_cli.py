"""The command line: one table of commands (the `train` ones from the method registry), grouped
help, one-line errors, and the README's command list kept complete."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from raylign.cli import GROUPS, commands, main, usage
from raylign.launch.methods import METHODS
from raylign.models.local import ModelNotFoundError
from raylign.models.registry import resolve_model, shipped_names

README = Path(__file__).resolve().parents[2] / "README.md"


def test_help_lists_every_command_grouped_in_order(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in commands():
        assert " ".join(command.words) in out
    headers = [line.rstrip(":") for line in out.splitlines() if re.fullmatch(r"[a-z]+:", line)]
    assert headers == [g for g in GROUPS if any(c.words[0] == g for c in commands())]


def test_every_registered_method_is_a_train_command():
    train = {c.words[1]: c for c in commands() if c.words[0] == "train"}
    assert list(train) == [m.name for m in METHODS]
    assert all(c.target == "raylign.launch.train:main" and c.bound == (name,) for name, c in train.items())


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
    assert main(["train", "ppo2"]) == 2


def test_model_not_local_says_what_to_do(tmp_path):
    with pytest.raises(ModelNotFoundError, match="never downloads"):
        resolve_model("meta-llama/Llama-3.1-8B-Instruct")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(tmp_path / "empty")


def test_local_path_resolves(tiny_model_dir):
    assert resolve_model(tiny_model_dir) == tiny_model_dir.resolve()


def test_every_shipped_name_is_known_to_model_prepare():
    assert {"SmolLM2-135M-Instruct", "hh-rm-smollm2", "alpaca-rm-smollm2"} <= set(shipped_names())


def test_every_command_target_imports():
    for command in commands():
        module, func = command.target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), " ".join(command.words)


def test_readme_lists_every_command_as_help_groups_them():
    """The README's command list is `raylign --help` itself: every command, in its groups."""
    text = README.read_text()
    block = text[text.index("<!-- cli -->") + len("<!-- cli -->"): text.index("<!-- /cli -->")]
    assert block.strip().strip("`").strip() == usage().strip(), \
        "README's command list differs from `raylign --help`: paste `raylign --help` between the cli markers"


def test_readme_method_table_lists_every_registered_method():
    text = README.read_text()
    block = text[text.index("<!-- methods -->"): text.index("<!-- /methods -->")]
    rows = re.findall(r"^\| `(?:raylign )?train ([a-z-]+)`", block, flags=re.M)
    assert rows == [m.name for m in METHODS], "README's method table differs from the registry"
