import pytest

from raylign.config import ConfigError, StrictModel, apply_overrides, load_config
from raylign.sampling.base import SamplingConfig


class Inner(StrictModel):
    rate: float = 0.1
    name: str = "x"


class Recipe(StrictModel):
    steps: int = 3
    inner: Inner = Inner()
    sampling: SamplingConfig = SamplingConfig()


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("steps: 5\ninner:\n  rate: 0.5\n")
    config = load_config(Recipe, path, ["inner.name=abc", "sampling.num_samples=8", "sampling.backend=hf"])
    assert config.steps == 5
    assert config.inner.rate == 0.5
    assert config.inner.name == "abc"
    assert config.sampling.num_samples == 8
    assert config.sampling.backend == "hf"


def test_misspelled_key_in_file_names_the_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("inner:\n  rat: 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'inner\.rat'"):
        load_config(Recipe, path)


def test_misspelled_override_names_the_key():
    with pytest.raises(ConfigError, match=r"unknown key 'sampling\.temprature'"):
        load_config(Recipe, None, ["sampling.temprature=0.7"])


def test_ill_typed_value_names_the_key():
    with pytest.raises(ConfigError, match=r"key 'steps'"):
        load_config(Recipe, None, ["steps=many"])
    with pytest.raises(ConfigError, match=r"key 'sampling\.backend'"):
        load_config(Recipe, None, ["sampling.backend=tgi"])


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"steps": 3}, ["steps.x=1"])


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Recipe, tmp_path / "nope.yaml")


class WithNestedDefaults(StrictModel):
    sampling: SamplingConfig = SamplingConfig(num_samples=2, max_new_tokens=48)


def test_override_keeps_sibling_defaults_of_a_section(tmp_path):
    config = load_config(WithNestedDefaults, None, ["sampling.max_new_tokens=16"])
    assert config.sampling.max_new_tokens == 16
    assert config.sampling.num_samples == 2  # the recipe class's default, not SamplingConfig's
    path = tmp_path / "r.yaml"
    path.write_text("sampling:\n  temperature: 0.5\n")
    config = load_config(WithNestedDefaults, path)
    assert (config.sampling.temperature, config.sampling.num_samples, config.sampling.max_new_tokens) == (0.5, 2, 48)


def test_printed_configs_never_show_secrets():
    from raylign.config import dump_config, load_config
    from raylign.launch.recipes import recipe_class

    config = load_config(recipe_class("grpo"), None, ["reward.kind=http", "reward.url=http://h:1", "reward.token=s3cret"])
    text = dump_config(config)
    assert "s3cret" not in text and "token: '***'" in text and "http://h:1" in text
    assert config.reward.token == "s3cret"  # only the printed copy is redacted
