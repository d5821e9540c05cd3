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
