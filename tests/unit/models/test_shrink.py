"""`raylign model shrink`: the bottom blocks of a model, saved so plain transformers loads it."""

import pytest

from raylign.models.cli import shrink
from raylign.models.shrink import shrink_model


def test_shrunk_model_keeps_the_bottom_blocks_and_loads(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    info = shrink_model(tiny_model_dir, 1, tmp_path / "small")
    assert info["kept_layers"] == 1 and info["of_layers"] == 2 and info["parameters"] < info["source_parameters"]
    small = AutoModelForCausalLM.from_pretrained(tmp_path / "small")
    whole = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert small.config.num_hidden_layers == 1
    for name, param in small.state_dict().items():  # the same weights where both have them
        assert torch.equal(param, whole.state_dict()[name]), name
    assert small.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=3, do_sample=False).shape == (1, 6)


def test_keep_layers_out_of_range_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="between 1 and 1 .* has 2 blocks"):
        shrink(["--model", str(tiny_model_dir), "--keep-layers", "2", "--output", str(tmp_path / "x")])


def test_a_shrunk_name_is_built_once_into_the_model_cache(tiny_model_dir, tmp_path, monkeypatch):
    from raylign.models.registry import resolve_model

    monkeypatch.setenv("RAYLIGN_CACHE", str(tmp_path / "cache"))
    path = resolve_model(f"{tiny_model_dir}@layers=1")
    assert path.parent == tmp_path / "cache" / "models" and (path / "raylign_shrunk.json").exists()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(f"{tiny_model_dir}@layers=1") == path  # the second time: as built
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
