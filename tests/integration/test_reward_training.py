"""Train a tiny reward model on the real local Ray cluster, reload it with plain transformers,
and get the same scores."""

from pathlib import Path

import pytest
import torch

from raylign.data.bundled import BUNDLED_HH
from tests.helpers import method_recipe, train_offline

pytestmark = pytest.mark.integration



def _train(tiny_model_dir, out_dir, **overrides):
    config = method_recipe("rm", {
        "model": str(tiny_model_dir),
        "output_dir": str(out_dir),
        "data": {"path": str(BUNDLED_HH), "limit": 48, "max_length": 96, "test_fraction": 0.25, "validation_fraction": 0.2},
        "batch_size": 4,
        "optim": {"lr": 1e-3},
        "eval_every": 2,
        "max_steps": 4,
        "log_every": 1,
        "num_workers": 2,
        "cpus_per_worker": 1,
        **overrides,
    })
    return train_offline("rm", config)


def _plain_transformers_scores(model_dir, texts):
    """Scores the way a user without raylign would compute them: right padding, model logits."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    assert model.config.pad_token_id is not None and model.config.num_labels == 1
    batch = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits[:, 0].tolist()


def _check_reload(model_dir, summary):
    from raylign.models.chat import load_tokenizer
    from raylign.scoring.reward_model import RewardScorer
    from raylign.scoring.text import render_scored_text

    assert (Path(model_dir) / "config.json").exists() and (Path(model_dir) / "metrics.jsonl").exists()
    assert summary["counts"]["train"]["pairs"] > 0 and "test_accuracy" in summary
    prompts = ["What is the capital of France?", [{"role": "user", "content": "Write a short poem about the sea"}]]
    responses = ["The capital of France is Paris.", "The sea, the sky and the wind."]
    ours = RewardScorer(model_dir, max_length=96).score(prompts, responses)
    tokenizer = load_tokenizer(str(model_dir))
    texts = [render_scored_text(tokenizer, p, r) for p, r in zip(prompts, responses)]
    assert _plain_transformers_scores(str(model_dir), texts) == pytest.approx(ours, abs=1e-4)


def test_train_top_layers_on_ray_train_and_reload(ray_cluster, tiny_model_dir, tmp_path):
    out = tmp_path / "rm"
    summary = _train(tiny_model_dir, out, trainable="top_layers", top_layers=1,
                     rm={"export_delta": str(tmp_path / "d.safetensors")})
    _check_reload(out, summary)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert any('"split": "validation"' in line for line in lines) and any('"split": "test"' in line for line in lines)
    assert (tmp_path / "d.safetensors").stat().st_size > 0


def test_train_lora_merges_into_a_plain_checkpoint(ray_cluster, tiny_model_dir, tmp_path):
    out = tmp_path / "rm_lora"
    summary = _train(tiny_model_dir, out, trainable="lora", lora={"r": 4, "alpha": 8}, max_steps=2, bf16=True, grad_accum=2)
    assert (out / "adapter").is_dir()
    _check_reload(out, summary)
