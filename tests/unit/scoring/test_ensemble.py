"""Reward-model ensembles: the aggregates against hand values, the manifest, and one scorer
interface over several models."""

import json
import math

import pytest
import torch

from raylign.algorithms.reward_model import ensemble_bradley_terry_sum, member_mask
from raylign.scoring.base import EnsembleConfig, EnsembleSettings
from raylign.scoring.ensemble import (
    EnsembleScorer,
    aggregate_scores,
    load_scorer,
    read_manifest,
)

SCORES = torch.tensor([[1.0, 3.0], [2.0, 2.0], [-1.0, 5.0]])


def test_aggregates_by_hand():
    assert aggregate_scores(SCORES, "mean").tolist() == [2.0, 2.0, 2.0]
    assert aggregate_scores(SCORES, "min").tolist() == [1.0, 2.0, -1.0]
    # population std over the two members: 1, 0, 3
    assert aggregate_scores(SCORES, "mean_minus_std", 0.5).tolist() == [1.5, 2.0, 0.5]
    with pytest.raises(ValueError, match=r"\[n, k\]"):
        aggregate_scores(torch.tensor([1.0, 2.0]), "mean")


def test_member_masks_are_seeded_per_prompt_and_member():
    masks = [member_mask(f"p{i}", 3, 0.5) for i in range(200)]
    assert masks == [member_mask(f"p{i}", 3, 0.5) for i in range(200)]
    share = sum(sum(m) for m in masks) / 600
    assert 0.4 < share < 0.6 and len({tuple(m) for m in masks}) == 8  # members see different pairs
    assert member_mask("p", 4, 1.0) == [1.0] * 4


def test_ensemble_loss_by_hand():
    chosen, rejected = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    loss, pairs, metrics = ensemble_bradley_terry_sum(chosen, rejected, torch.tensor([[1.0, 1.0]]), "mean")
    # members: -log sigma(1) and -log sigma(-1), summed and divided by k = 2
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(1))) / 2
    assert loss.item() == pytest.approx(expected) and pairs == 1.0
    assert metrics == {"accuracy": 0.5, "member_accuracy": 0.5}  # a tie of the means counts half
    masked, _, _ = ensemble_bradley_terry_sum(chosen, rejected, torch.tensor([[1.0, 0.0]]), "mean")
    assert masked.item() == pytest.approx(math.log(1 + math.exp(-1)) / 2)


class _Member:
    def __init__(self, offset):
        self.offset = offset

    def encode(self, prompt, response):
        return [len(response)]

    def score_ids(self, sequences):
        return [float(s[0]) + self.offset for s in sequences]


def test_scorer_aggregates_its_members():
    scorer = EnsembleScorer([_Member(0.0), _Member(2.0)], EnsembleSettings(aggregate="mean_minus_std", std_weight=1.0))
    assert scorer.score(["q", "q"], ["ab", "abcd"]) == [2.0, 4.0]  # means 3, 5; std 1
    assert EnsembleScorer([_Member(0.0), _Member(2.0)], EnsembleSettings(aggregate="min")).score_rows(
        [{"prompt": "q", "response": "abc"}]) == [3.0]


def test_a_manifest_directory_loads_as_one_scorer(tiny_reward_model_dir, tmp_path):
    import shutil

    for name in ("member_0", "member_1"):
        shutil.copytree(tiny_reward_model_dir, tmp_path / name)
    (tmp_path / "raylign_ensemble.json").write_text(json.dumps({"members": ["member_0", "member_1"],
                                                                "aggregate": "mean", "std_weight": 1.0}))
    members, settings = read_manifest(tmp_path)
    assert [m.split("/")[-1] for m in members] == ["member_0", "member_1"] and settings.aggregate == "mean"
    single = load_scorer(str(tiny_reward_model_dir), max_length=64)
    ensemble = load_scorer(str(tmp_path), max_length=64, settings=EnsembleSettings(aggregate="min"))
    listed = load_scorer(EnsembleConfig(models=[str(tiny_reward_model_dir)] * 2, aggregate="mean"), max_length=64)
    expected = single.score(["Hi"], ["Hello there"])
    assert ensemble.score(["Hi"], ["Hello there"]) == pytest.approx(expected, abs=1e-6)
    assert listed.score(["Hi"], ["Hello there"]) == pytest.approx(expected, abs=1e-6)
    (tmp_path / "raylign_ensemble.json").write_text("{}")
    with pytest.raises(ValueError, match="raylign_ensemble.json: not a raylign ensemble manifest"):
        read_manifest(tmp_path)


def test_members_that_differ_only_at_the_top_share_their_lower_blocks(tiny_reward_model_dir, tmp_path):
    """Two members = the tiny RM and a copy with its top block and head changed: the trunk runs
    once, and every member's score equals what that member scores alone."""
    import shutil

    from raylign.scoring.reward_model import load_reward_model
    from raylign.scoring.shared_trunk import shared_block_count

    shutil.copytree(tiny_reward_model_dir, tmp_path / "member_0")
    model, tokenizer, _ = load_reward_model(tiny_reward_model_dir)
    torch.manual_seed(5)
    with torch.no_grad():
        for param in [*model.model.layers[-1].parameters(), *model.score.parameters()]:
            param.add_(0.05 * torch.randn_like(param))
    model.save_pretrained(tmp_path / "member_1")
    tokenizer.save_pretrained(tmp_path / "member_1")
    (tmp_path / "raylign_ensemble.json").write_text(json.dumps({"members": ["member_0", "member_1"], "aggregate": "mean"}))

    ensemble = load_scorer(str(tmp_path), max_length=64, batch_size=3)
    assert shared_block_count([m.model for m in ensemble.members]) == len(model.model.layers) - 1
    prompts = ["Hi", "How are you today?", "Tell me a long story about a dragon", "?", "Why"]
    responses = ["Hello there", "Fine.", "Once upon a time there was a dragon who", "", "Because it is"]
    sequences = [ensemble.encode(p, r) for p, r in zip(prompts, responses)]
    shared = ensemble.member_scores_ids(sequences)
    assert ensemble.shared_trunk() is not None
    alone = [load_scorer(str(tmp_path / name), max_length=64).score(prompts, responses) for name in ("member_0", "member_1")]
    assert torch.allclose(shared, torch.tensor(alone, dtype=torch.float64).T, atol=1e-5)
    assert not torch.allclose(shared[:, 0], shared[:, 1])  # the changed top block and head count

    with torch.no_grad():  # different embeddings: nothing shared, each member scores in full
        model.model.embed_tokens.weight.add_(1.0)
    assert shared_block_count([ensemble.members[0].model, model]) == 0


def test_training_an_ensemble_runs_the_frozen_trunk_once_with_the_same_scores_and_gradients(tiny_reward_model_dir):
    from raylign.algorithms.reward_model import EnsemblePairScorer, RewardEnsembleModule
    from raylign.models.trainable import LoraSettings, make_trainable
    from raylign.scoring.reward_model import load_reward_model, pad_batch, sequence_scores

    members = [load_reward_model(tiny_reward_model_dir, head_seed=seed)[0] for seed in (0, 1)]
    ensemble = make_trainable(RewardEnsembleModule(members), "top_layers", 1, LoraSettings())
    ids, mask = pad_batch([[5, 6, 7, 8], [9, 10], [11, 12, 13]], members[0].config.pad_token_id)
    scorer = EnsemblePairScorer(ensemble)
    shared = scorer(ids, mask)
    assert scorer._trunk and shared.shape == (3, 2) and shared.requires_grad
    shared.sum().backward()
    top = [p for p in ensemble.members[1].model.layers[-1].parameters()]
    grads = [p.grad.clone() for p in top]
    ensemble.zero_grad()
    alone = torch.stack([sequence_scores(m, ids, mask) for m in ensemble.members], dim=1)
    alone.sum().backward()
    assert torch.allclose(shared, alone, atol=1e-5)
    assert all(torch.allclose(g, p.grad, atol=1e-5) for g, p in zip(grads, top))
    assert ensemble.members[0].model.layers[0].self_attn.q_proj.weight.grad is None  # the frozen trunk
