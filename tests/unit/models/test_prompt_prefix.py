"""A checkpoint trained with control tokens (Quark) records its prompt prefix, and samplers apply it."""

from __future__ import annotations

import shutil

import pytest

from raylign.algorithms.quark import add_control_tokens
from raylign.models.chat import load_tokenizer, prompt_prefix_ids, save_prompt_prefix
from raylign.sampling.actor import SamplerWorker
from raylign.sampling.base import SamplingConfig

ROW = {"prompt_id": "p0", "prompt": "hello", "messages": [{"role": "user", "content": "hello"}]}


def test_plain_model_has_no_prefix(tiny_model_dir):
    assert prompt_prefix_ids(tiny_model_dir, load_tokenizer(str(tiny_model_dir))) == []


def test_recorded_prefix_starts_the_chat_template_so_every_library_applies_it(tiny_model_dir, tmp_path):
    model = add_control_tokens(str(tiny_model_dir), tmp_path / "quark", ["<|reward_0|>", "<|reward_1|>"])
    save_prompt_prefix(model, ["<|reward_0|>"])
    tokenizer = load_tokenizer(model)
    best = tokenizer.convert_tokens_to_ids("<|reward_0|>")
    assert prompt_prefix_ids(model, tokenizer) == []  # the template carries it: nothing to add

    # plain transformers, as a user would load the checkpoint
    from transformers import AutoTokenizer

    plain = AutoTokenizer.from_pretrained(model).apply_chat_template(ROW["messages"], add_generation_prompt=True,
                                                                     tokenize=True)
    plain = plain["input_ids"] if hasattr(plain, "keys") else plain
    assert plain[0] == best and best not in plain[1:]

    sampler = SamplerWorker(model, SamplingConfig(backend="hf", num_samples=1, max_new_tokens=3, temperature=0.0))
    row = sampler.generate([ROW], 1)[0]
    assert row["prompt_token_ids"][0] == best and best not in row["prompt_token_ids"][1:]


def test_a_recorded_prefix_outside_the_template_is_added_by_samplers(tiny_model_dir, tmp_path):
    """A checkpoint whose record predates the template (or a model with no chat template)."""
    import json

    model = add_control_tokens(str(tiny_model_dir), tmp_path / "quark", ["<|reward_0|>", "<|reward_1|>"])
    (tmp_path / "quark" / "raylign_generation.json").write_text(json.dumps({"prompt_prefix_tokens": ["<|reward_0|>"]}))
    tokenizer = load_tokenizer(model)
    best = tokenizer.convert_tokens_to_ids("<|reward_0|>")
    assert prompt_prefix_ids(model, tokenizer) == [best]
    sampler = SamplerWorker(model, SamplingConfig(backend="hf", num_samples=1, max_new_tokens=3, temperature=0.0))
    row = sampler.generate([ROW], 1)[0]
    assert row["prompt_token_ids"][0] == best and row["prompt_prefix_ids"] == [best]
    # A row that says its own prefix (Quark's training samplers) keeps it, even an empty one.
    row = sampler.generate([{**ROW, "prompt_prefix_ids": []}], 1)[0]
    assert row["prompt_token_ids"][0] != best


def test_prefix_unknown_to_the_vocabulary_is_an_error(tiny_model_dir, tmp_path):
    model = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, model)
    save_prompt_prefix(model, ["<|reward_0|>"])
    tokenizer = load_tokenizer(str(model))
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        prompt_prefix_ids(model, tokenizer)


def test_control_tokens_start_distinct_and_near_the_mean(tiny_model_dir, tmp_path):
    """Frozen embeddings (top-layer training) must still tell the quantiles apart."""
    import torch
    from transformers import AutoModelForCausalLM

    tokens = ["<|reward_0|>", "<|reward_1|>", "<|reward_2|>"]
    model_dir = add_control_tokens(str(tiny_model_dir), tmp_path / "quark", tokens)
    ids = load_tokenizer(model_dir).convert_tokens_to_ids(tokens)
    weight = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).get_input_embeddings().weight
    rows, existing = weight[ids], weight[: min(ids)]
    assert torch.cdist(rows, rows)[~torch.eye(3, dtype=torch.bool)].min() > 0.1
    # closer to the mean than a typical existing row is
    spread = (existing - existing.mean(0)).norm(dim=1).mean()
    assert ((rows - existing.mean(0)).norm(dim=1) < spread).all()
    again = add_control_tokens(str(tiny_model_dir), tmp_path / "again", tokens)  # seeded: the same rows
    assert torch.equal(AutoModelForCausalLM.from_pretrained(again, dtype=torch.float32).get_input_embeddings().weight[ids], rows)
