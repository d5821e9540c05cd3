"""Reward-model ensembles: k reward models read as one, so a policy must fool all of them at once.

An ensemble is either a directory written by `raylign train rm` with `rm.ensemble.members: k`
(`member_0/ ... member_{k-1}/`, each a plain Hugging Face reward model, and
`raylign_ensemble.json` naming them and the default aggregate), or any list of reward models
(`reward.kind: ensemble` with `reward.ensemble.models`). Every scorer goes through
`load_scorer`, so the engine's reward actor, `serve rm`, `annotate rm:...`, `eval rm` and
`eval hacks` take an ensemble wherever they take a reward model.

Aggregates (`aggregate_scores`): `mean`; `min` (the most pessimistic member); `mean_minus_std`,
mean - lambda * std over members (uncertainty-weighted optimisation: a response the members
disagree on is worth less, the usual guard against over-optimising one model's blind spot).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from raylign.models.registry import ENSEMBLE_MANIFEST as MANIFEST
from raylign.scoring.base import Aggregate, EnsembleConfig, EnsembleSettings
from raylign.scoring.reward_model import PairScoring

if TYPE_CHECKING:  # torch loads only where scores are computed, not where recipes are parsed
    import torch



def aggregate_scores(member_scores: "torch.Tensor", aggregate: Aggregate = "mean",
                     std_weight: float = 1.0) -> "torch.Tensor":
    """[n, k] member scores -> [n] scores. The std is the population one (over the k members)."""
    if member_scores.dim() != 2 or member_scores.shape[1] == 0:
        raise ValueError(f"member scores must be [n, k] with k >= 1, got {tuple(member_scores.shape)}")
    if aggregate == "mean":
        return member_scores.mean(dim=1)
    if aggregate == "min":
        return member_scores.min(dim=1).values
    if aggregate == "mean_minus_std":
        return member_scores.mean(dim=1) - std_weight * member_scores.std(dim=1, correction=0)
    raise ValueError(f"unknown aggregate '{aggregate}' (mean, min, mean_minus_std)")


def is_ensemble_dir(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | Path) -> tuple[list[str], EnsembleSettings]:
    """(member directories, default settings) of an ensemble directory."""
    manifest = Path(path) / MANIFEST
    try:
        data = json.loads(manifest.read_text())
        members = [str(Path(path) / name) for name in data["members"]]
        settings = EnsembleSettings(aggregate=data.get("aggregate", "mean_minus_std"),
                                    std_weight=data.get("std_weight", 1.0))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{manifest}: not a raylign ensemble manifest ({err})") from None
    if not members:
        raise ValueError(f"{manifest}: lists no members")
    return members, settings


def write_manifest(out_dir: Path, members: list[str], settings: EnsembleSettings, info: dict) -> None:
    manifest = {**info, "members": members, "aggregate": settings.aggregate, "std_weight": settings.std_weight}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))


class EnsembleScorer(PairScoring):
    """The `RewardScorer` interface over k members: each encodes the pair its own way (members
    may differ in tokenizer or text form) and the scores are aggregated. Members trained from one
    base model share their lower blocks, which then run once for all (`shared_trunk`)."""

    def __init__(self, members: Sequence, settings: EnsembleSettings, model_path: str = "ensemble"):
        self.members, self.settings, self.model_path = list(members), settings, model_path
        self._trunk = None if all(hasattr(m, "model") for m in self.members) else False

    def encode(self, prompt, response: str) -> tuple[list[int], ...]:
        return tuple(member.encode(prompt, response) for member in self.members)

    def shared_trunk(self):
        """The members' shared lower blocks as one `SharedTrunk`, or None when they share none."""
        if self._trunk is None:
            from raylign.scoring.shared_trunk import SharedTrunk, shared_block_count

            models = [m.model for m in self.members]
            blocks = shared_block_count(models)
            self._trunk = SharedTrunk(models, blocks, models[0].config.pad_token_id,
                                      self.members[0].batch_size) if blocks else False
        return self._trunk or None

    def member_scores_ids(self, sequences: list[tuple[list[int], ...]]) -> "torch.Tensor":
        import torch

        trunk = self.shared_trunk()
        if trunk is not None and all(len(set(map(tuple, s))) == 1 for s in sequences):
            return trunk.member_scores([s[0] for s in sequences])
        columns = [member.score_ids([s[m] for s in sequences]) for m, member in enumerate(self.members)]
        return torch.tensor(columns, dtype=torch.float64).T.reshape(len(sequences), len(self.members))

    def score_ids(self, sequences: list[tuple[list[int], ...]]) -> list[float]:
        if not sequences:
            return []
        scores = self.member_scores_ids(sequences)
        return aggregate_scores(scores, self.settings.aggregate, self.settings.std_weight).tolist()


def load_scorer(model, max_length: int | None = None, batch_size: int = 16, dtype: str = "float32",
                over_long: str = "truncate", settings: EnsembleSettings | None = None):
    """A scorer for a reward model, an ensemble directory, or an `EnsembleConfig` (a list of
    models). `max_length` None = each model's training max_length; `settings` overrides an
    ensemble directory's own aggregate."""
    from raylign.scoring.reward_model import RewardScorer, trained_max_length

    def single(path):
        from raylign.models.registry import resolve_model

        resolved = resolve_model(path)
        return RewardScorer(resolved, max_length or trained_max_length(resolved), batch_size, dtype, over_long)

    if isinstance(model, EnsembleConfig):
        if not model.models:
            raise ValueError("reward kind 'ensemble' needs reward.ensemble.models: a list of reward models")
        return EnsembleScorer([single(m) for m in model.models], settings or model, "+".join(model.models))
    if is_ensemble_dir(model):
        members, own = read_manifest(model)
        return EnsembleScorer([single(m) for m in members], settings or own, str(model))
    return single(model)
