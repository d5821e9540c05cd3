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


def _plain_train_pairs(limit=48, test=0.25, validation=0.2):
    from raylign.data.adapters import iter_rows
    from raylign.data.splits import split_of

    return sum(split_of(r["prompt_id"], test, validation) == "train" for r in iter_rows(BUNDLED_HH, "preference", limit=limit))


def test_train_lora_with_hack_pairs_merges_into_a_plain_checkpoint(ray_cluster, tiny_model_dir, tmp_path):
    import json

    extra = tmp_path / "hack_pairs.jsonl"
    extra.write_text("".join(json.dumps({"prompt": f"q{i}", "messages": [{"role": "user", "content": f"q{i}"}],
                                         "chosen": "A clear answer.", "rejected": "Sorry. " * 6}) + "\n"
                             for i in range(3)))
    out = tmp_path / "rm_lora"
    summary = _train(tiny_model_dir, out, trainable="lora", lora={"r": 4, "alpha": 8}, max_steps=2, bf16=True, grad_accum=2,
                     rm={"hack_pairs_per_row": 1, "extra_pairs": [str(extra)], "extra_pairs_repeat": 2})
    assert (out / "adapter").is_dir()
    _check_reload(out, summary)
    # every training pair, one hack pair of each, and the extra file twice; the held-out splits as read
    assert summary["counts"]["train"]["pairs"] == 2 * _plain_train_pairs() + 2 * 3


def test_train_an_ensemble_in_one_job_and_score_it_as_one_model(ray_cluster, tiny_model_dir, tmp_path):
    from raylign.scoring.ensemble import load_scorer
    from raylign.scoring.reward_model import RewardScorer

    out = tmp_path / "rm_ensemble"
    summary = _train(tiny_model_dir, out, trainable="top_layers", top_layers=1, max_steps=2,
                     rm={"ensemble": {"members": 2, "subset_fraction": 0.7, "aggregate": "mean"}})
    assert "test_accuracy" in summary and (out / "raylign_ensemble.json").exists()
    prompts, responses = ["What is the capital of France?", "Hi"], ["Paris.", "Hello, how can I help?"]
    members = [RewardScorer(out / f"member_{m}", max_length=96).score(prompts, responses) for m in range(2)]
    assert members[0] != pytest.approx(members[1])  # two models, not one saved twice
    ensemble = load_scorer(str(out))
    together = ensemble.score(prompts, responses)
    assert together == pytest.approx([(a + b) / 2 for a, b in zip(*members)], abs=1e-5)
    assert ensemble.shared_trunk() is not None  # the frozen lower block ran once for both members
    from raylign.models.chat import load_tokenizer
    from raylign.scoring.text import render_scored_text

    tokenizer = load_tokenizer(str(out / "member_1"))
    texts = [render_scored_text(tokenizer, p, r) for p, r in zip(prompts, responses)]
    assert _plain_transformers_scores(str(out / "member_1"), texts) == pytest.approx(members[1], abs=1e-4)
