"""Trainable-part selection and the compact shipped delta: base + delta rebuilds the same model."""

import pytest
import torch

from raylign.models.registry import resolve_model
from raylign.models.shipped import export_delta
from raylign.models.trainable import LoraSettings, apply_lora, count_parameters, freeze_to_top_layers
from raylign.scoring.reward_model import load_reward_model, pad_batch, sequence_scores
from raylign.scoring.text import encode_scored_pair


def test_top_layers_trains_top_blocks_norm_and_head_only(tiny_model_dir):
    model, _, _ = load_reward_model(tiny_model_dir)
    names = freeze_to_top_layers(model, 1)
    assert "score.weight" in names and "model.norm.weight" in names
    assert all(not n.startswith("model.layers.0.") for n in names)
    assert any(n.startswith("model.layers.1.") for n in names)
    assert "model.embed_tokens.weight" not in names
    with pytest.raises(ValueError, match="has 2 blocks"):
        freeze_to_top_layers(model, 3)


def test_lora_trains_adapters_and_head(tiny_model_dir):
    model, _, _ = load_reward_model(tiny_model_dir)
    peft_model = apply_lora(model, LoraSettings(r=4, alpha=8, top_layers=1))
    trained, total = count_parameters(peft_model)
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert 0 < trained < total
    assert any("lora_" in n for n in names) and any("score" in n for n in names)
    assert not any("layers.0." in n and "lora_" in n for n in names)


def test_delta_rebuilds_the_trained_model(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RAYLIGN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(1)
    model, tokenizer, _ = load_reward_model(tiny_model_dir)
    freeze_to_top_layers(model, 1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.01 * torch.randn_like(param))
    trained_dir = tmp_path / "trained"
    model.save_pretrained(trained_dir)
    tokenizer.save_pretrained(trained_dir)
    info = export_delta(trained_dir, tiny_model_dir, tmp_path / "delta.safetensors", 128, str(tiny_model_dir))
    assert info["changed"] > 0 and info["tensors"] == info["changed"] + 1  # + the new score head

    rebuilt_dir = resolve_model(str(tmp_path / "delta.safetensors"))
    assert resolve_model(str(tmp_path / "delta.safetensors")) == rebuilt_dir  # cached
    rebuilt, _, has_head = load_reward_model(rebuilt_dir)
    assert has_head
    seqs = [encode_scored_pair(tokenizer, "Hi", "Hello there", 128), encode_scored_pair(tokenizer, "Hi", "No.", 128)]
    with torch.no_grad():
        want = sequence_scores(model.eval(), *pad_batch(seqs, tokenizer.pad_token_id))
        got = sequence_scores(rebuilt.eval(), *pad_batch(seqs, tokenizer.pad_token_id))
    assert got.tolist() == pytest.approx(want.tolist(), abs=1e-3)


def test_lora_delta_ships_factors_and_rebuilds_the_merged_model(tiny_model_dir, tmp_path, monkeypatch):
    from raylign.algorithms.reward_model import RewardModelObjective
    from tests.helpers import method_recipe

    monkeypatch.setenv("RAYLIGN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(2)
    model, tokenizer, _ = load_reward_model(tiny_model_dir)
    peft_model = apply_lora(model, LoraSettings(r=4, alpha=8))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.add_(0.05 * torch.randn_like(param))
    seqs = [encode_scored_pair(tokenizer, "Hi", "Hello there", 128), encode_scored_pair(tokenizer, "Hi", "No.", 128)]
    with torch.no_grad():
        want = sequence_scores(peft_model.eval(), *pad_batch(seqs, tokenizer.pad_token_id))
    trained_dir = tmp_path / "trained"
    RewardModelObjective(method_recipe("rm", {"model": str(tiny_model_dir)})).save(peft_model, tokenizer, trained_dir)
    info = export_delta(trained_dir, tiny_model_dir, tmp_path / "lora.safetensors", 128, str(tiny_model_dir))
    assert info["changed"] > 0
    rebuilt, _, _ = load_reward_model(resolve_model(str(tmp_path / "lora.safetensors")))
    with torch.no_grad():
        got = sequence_scores(rebuilt.eval(), *pad_batch(seqs, tokenizer.pad_token_id))
    assert got.tolist() == pytest.approx(want.tolist(), abs=1e-4)


def test_every_command_takes_a_shipped_name_model_prepare_included(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """A shipped reward-model name resolves in the one resolver, so `raylign model prepare NAME`
    builds it like any command that names it (before: 'not a local directory')."""
    from raylign.cli import main
    from raylign.models import registry

    monkeypatch.setenv("RAYLIGN_CACHE", str(tmp_path / "cache"))
    model, tokenizer, _ = load_reward_model(tiny_model_dir)
    model.save_pretrained(tmp_path / "trained")
    tokenizer.save_pretrained(tmp_path / "trained")
    export_delta(tmp_path / "trained", tiny_model_dir, tmp_path / "tiny-rm.safetensors", 64, str(tiny_model_dir))
    monkeypatch.setitem(registry.SHIPPED, "tiny-rm-test", tmp_path / "tiny-rm.safetensors")
    assert main(["model", "prepare", "tiny-rm-test"]) == 0
    built = capsys.readouterr().out.strip().splitlines()[-1]
    assert built == str(tmp_path / "cache" / "models" / "tiny-rm-test")
    assert load_reward_model(built)[2]  # a reward model with its scalar head
    assert "tiny-rm-test" in registry.shipped_names()
