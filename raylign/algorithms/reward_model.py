"""Reward models (`raylign train rm`): the pairwise Bradley-Terry objective of the offline trainer.

Rows: {chosen_ids, rejected_ids, length}, each the (prompt, response) text of
`raylign.scoring.text.encode_scored_pair` in `data.prompt_format` (chat template or HH
markers, recorded in raylign_rm.json), so training scores exactly the tokens evaluation,
Serve and the reward actor score. Loss: -log sigma(r_chosen - r_rejected)
summed over pairs (the trainer divides by the global pair count); accuracy counts ties
as half. See ALGORITHMS.md, Reward model. With `rm.export_delta` the trained model is also
written as a compact weight delta against its base (`raylign.models.shipped`), the form the
shipped reward models take.

    raylign train rm --config jobs/rm_hh.yaml [key.sub=value ...]
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator

from raylign.algorithms.objective import OfflineObjective
from raylign.config import StrictModel
from raylign.data.adapters import human_probability
from raylign.data.bundled import BUNDLED_HH
from raylign.data.hack_forms import TRAINABLE_FAMILIES, pick_families, training_pairs
from raylign.models.chat import PROMPT_FORMATS
from raylign.models.trainable import head_names
from raylign.scoring.base import EnsembleSettings
from raylign.scoring.losses import pairwise_correct


class EnsembleTraining(EnsembleSettings):
    members: int = Field(1, ge=1, le=16)
    subset_fraction: float = Field(0.8, gt=0.0, le=1.0)  # each member's share of the pairs, picked by prompt


def member_mask(prompt_id: str, members: int, subset_fraction: float) -> list[float]:
    """Which members train on a pair: member m when a seeded hash of (prompt, m) falls under
    `subset_fraction` (the whole data at 1.0; members then differ by their head seed only)."""
    mask = []
    for m in range(members):
        digest = hashlib.blake2b(f"{m}\x1f{prompt_id}".encode(), digest_size=8).digest()
        mask.append(1.0 if int.from_bytes(digest, "big") / 2**64 < subset_fraction else 0.0)
    return mask


class RewardModelConfig(StrictModel):
    head_lr: float | None = Field(None, gt=0.0)  # the fresh scalar head often wants a larger rate than optim.lr
    export_delta: str | None = None  # also write a compact weight delta file here (raylign/models/shipped.py)
    # hack-aware training: per training pair, this many rule-made hack pairs (the dataset's chosen
    # answer over a hacked variant, `raylign.data.hack_forms`) from these families; 0 = off.
    # Only the train split is augmented, so `eval hacks` on the test split stays held out by prompt.
    hack_pairs_per_row: int = Field(0, ge=0, le=4)
    hack_families: list[str] = Field(default_factory=lambda: list(TRAINABLE_FAMILIES))
    # the iterative mode: `raylign annotate hack-pairs` files (a finished policy run's high-scored
    # samples the rules flag, as rejected answers) added to the train split
    extra_pairs: list[str] = Field(default_factory=list)
    # each extra pair this many times: a policy run flags tens of samples beside thousands of
    # dataset pairs, and seen once they barely move the model
    extra_pairs_repeat: int = Field(1, ge=1, le=100)
    # members > 1: an ensemble of reward models trained in this one Ray Train job, each from its
    # own head seed on its own seeded share of the pairs; saved as member_*/ + raylign_ensemble.json
    ensemble: EnsembleTraining = EnsembleTraining()

    @field_validator("hack_families")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(TRAINABLE_FAMILIES))
        if unknown:
            raise ValueError(f"unknown hack families {unknown} (choose from {', '.join(TRAINABLE_FAMILIES)})")
        return value

    @model_validator(mode="after")
    def _ensemble_ships_no_delta(self):
        if self.ensemble.members > 1 and self.export_delta:
            raise ValueError("rm.export_delta writes one model; an ensemble (rm.ensemble.members > 1) is a directory")
        return self


class AddHackPairs:
    """Ray Data stage: each preference row, then `per_row` hack pairs of it (families picked by a
    seeded hash of the prompt, so a rerun trains on the same pairs). Rows come out with the
    columns the tokenizer reads, so files of other formats can be unioned with them."""

    def __init__(self, families: list[str], per_row: int):
        self.families, self.per_row = families, per_row

    def __call__(self, table):
        import pyarrow as pa

        out = []
        for row in table.to_pylist():
            out.append(row)
            for family in pick_families(self.families, self.per_row, row["prompt_id"]):
                out += training_pairs(row, family)[:1]
        return pa.Table.from_pylist([{key: row.get(key, default) for key, default in PAIR_COLUMNS.items()}
                                     for row in out], schema=_pair_schema())


PAIR_COLUMNS = {"prompt_id": "", "prompt": "", "messages": [], "chosen": "", "rejected": "", "preference": 1.0}


def _pair_schema():
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return pa.schema([("prompt_id", pa.string()), ("prompt", pa.string()), ("messages", pa.list_(message)),
                      ("chosen", pa.string()), ("rejected", pa.string()), ("preference", pa.float64())])


class TokenizePairs:
    """Ray Data stage: preference rows -> scored-text token ids of both responses."""

    def __init__(self, model_path: str, max_length: int, over_long: str, prompt_format: str = "chat",
                 ensemble: EnsembleTraining | None = None):
        self.model_path, self.max_length, self.over_long = model_path, max_length, over_long
        self.prompt_format = prompt_format
        self.ensemble = ensemble if ensemble is not None and ensemble.members > 1 else None

    def __call__(self, table):
        import pyarrow as pa

        from raylign.models.chat import load_tokenizer
        from raylign.scoring.text import PairTooLongError, encode_scored_pair

        tokenizer = load_tokenizer(self.model_path)
        out = {"chosen_ids": [], "rejected_ids": [], "p_human": [], "length": [], "member_mask": []}
        for row in table.to_pylist():
            try:
                chosen, rejected = (encode_scored_pair(tokenizer, row, row[key], self.max_length, self.over_long,
                                                       self.prompt_format) for key in ("chosen", "rejected"))
            except PairTooLongError:
                continue
            out["chosen_ids"].append(chosen)
            out["rejected_ids"].append(rejected)
            out["p_human"].append(human_probability(row))
            out["length"].append(max(len(chosen), len(rejected)))
            if self.ensemble:
                out["member_mask"].append(member_mask(str(row.get("prompt_id", "")), self.ensemble.members,
                                                      self.ensemble.subset_fraction))
        columns = {} if not self.ensemble else {"member_mask": pa.array(out["member_mask"], pa.list_(pa.float32()))}
        return pa.table({
            **columns,
            "chosen_ids": pa.array(out["chosen_ids"], pa.list_(pa.int32())),
            "rejected_ids": pa.array(out["rejected_ids"], pa.list_(pa.int32())),
            "p_human": pa.array(out["p_human"], pa.float32()),
            "length": pa.array(out["length"], pa.int32()),
        })


class RewardEnsembleModule(torch.nn.Module):
    """k reward models trained side by side (`rm.ensemble.members`); `make_trainable` and the
    optimizer see each member's own trainable parameters."""

    def __init__(self, members: list):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        for member in self.members:
            member.gradient_checkpointing_enable(**kwargs)


class EnsemblePairScorer(torch.nn.Module):
    """[batch, k] scores, one column per member (the module DDP wraps, as `PairScorer`). The
    blocks no member trains (`trainable: top_layers`) run once for all members."""

    def __init__(self, ensemble: RewardEnsembleModule):
        super().__init__()
        self.ensemble = ensemble
        self._trunk = None  # built at the first forward, once `make_trainable` has frozen the trunk

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from raylign.scoring.reward_model import sequence_scores
        from raylign.scoring.shared_trunk import SharedTrunk, shared_block_count

        if self._trunk is None:
            members = list(self.ensemble.members)
            blocks = shared_block_count(members, frozen_only=True)
            self._trunk = SharedTrunk(members, blocks, members[0].config.pad_token_id) if blocks else False
        if self._trunk:
            return self._trunk.scores(input_ids, attention_mask)
        return torch.stack([sequence_scores(m, input_ids, attention_mask) for m in self.ensemble.members], dim=1)


def ensemble_bradley_terry_sum(chosen: torch.Tensor, rejected: torch.Tensor, mask: torch.Tensor,
                               aggregate: str = "mean", std_weight: float = 1.0) -> tuple[torch.Tensor, float, dict]:
    """[pairs, k] scores: each member's -log sigma(r_c - r_r) on the pairs its mask gives it,
    summed and divided by k (so the loss stays per pair); accuracy of the aggregated score and
    the members' mean accuracy."""
    from raylign.scoring.ensemble import aggregate_scores

    members = chosen.shape[1]
    loss_sum = (-F.logsigmoid(chosen - rejected) * mask).sum() / members
    with torch.no_grad():
        together = pairwise_correct(aggregate_scores(chosen, aggregate, std_weight),
                                    aggregate_scores(rejected, aggregate, std_weight))
        each = pairwise_correct(chosen, rejected)
    accuracy = float(together.mean()) if len(chosen) else float("nan")
    return loss_sum, float(len(chosen)), {"accuracy": accuracy, "member_accuracy": float(each.mean()) if len(chosen) else float("nan")}


def bradley_terry_sum(chosen: torch.Tensor, rejected: torch.Tensor) -> tuple[torch.Tensor, float, dict]:
    """(sum of -log sigma(r_c - r_r), number of pairs, {accuracy}) for one micro-batch."""
    loss_sum = -F.logsigmoid(chosen - rejected).sum()
    accuracy = float(pairwise_correct(chosen.detach(), rejected.detach()).mean()) if len(chosen) else float("nan")
    return loss_sum, float(len(chosen)), {"accuracy": accuracy}


class RewardModelObjective(OfflineObjective):
    name = "rm"
    config_class = RewardModelConfig
    section = "rm"
    recipe_defaults = {"data": {"path": str(BUNDLED_HH)}}
    renamed_keys = {"head_lr": "rm.head_lr", "export_delta": "rm.export_delta"}
    row_kind = "preference"
    unit = "pairs"
    lora_task = "SEQ_CLS"
    prompt_formats = PROMPT_FORMATS
    select_metric = "accuracy"
    select_mode = "max"

    def augment(self, ds, split: str):
        rm = self.config.rm
        if split != "train":
            return ds
        if not (rm.extra_pairs or rm.hack_pairs_per_row):
            return ds
        from raylign.data.datasets import read_whole

        def hack_pairs(rows, per_row: int):
            return rows.map_batches(AddHackPairs(rm.hack_families, per_row), batch_format="pyarrow", batch_size=64)

        extra = [hack_pairs(read_whole(path, "preference", on_error=self.config.data.on_error), 0)
                 for path in rm.extra_pairs for _ in range(rm.extra_pairs_repeat)]
        train = hack_pairs(ds, rm.hack_pairs_per_row)
        # seeded shuffle: appended at the end, the extra pairs would come last in the epoch (after an
        # early stop, never) and in batches of their own
        return train.union(*extra).random_shuffle(seed=self.config.seed) if extra else train

    def prepare_dataset(self, ds, model_path: str):
        data = self.config.data
        return ds.map_batches(TokenizePairs(model_path, data.max_length, data.over_long, data.prompt_format,
                                            self.config.rm.ensemble), batch_format="pyarrow", batch_size=64)

    def build_model(self, model_path: str):
        from raylign.scoring.reward_model import load_reward_model

        members = self.config.rm.ensemble.members
        loaded = [load_reward_model(model_path, head_seed=self.config.seed + m) for m in range(members)]
        tokenizer = loaded[0][1]
        return (loaded[0][0] if members == 1 else RewardEnsembleModule([model for model, _, _ in loaded])), tokenizer

    def forward_module(self, model):
        from raylign.scoring.reward_model import PairScorer

        return PairScorer(model) if not isinstance(model, RewardEnsembleModule) else EnsemblePairScorer(model)

    def param_groups(self, model) -> list[dict]:
        """The scalar head gets `rm.head_lr` (a fresh head wants a larger rate than the body)."""
        inner = model.members[0] if isinstance(model, RewardEnsembleModule) else model
        inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
        heads = tuple(head_names(inner))
        head, body = [], []
        for name, param in model.named_parameters():
            if param.requires_grad:
                parts = name.split(".")
                (head if any(h in parts for h in heads) else body).append(param)
        lr = self.config.optim.lr
        groups = [{"params": body, "lr": lr}]
        if head:
            groups.append({"params": head, "lr": self.config.rm.head_lr or lr})
        return [g for g in groups if g["params"]]

    def collate(self, rows: list[dict]):
        from raylign.scoring.reward_model import pad_batch

        ids, mask = pad_batch([r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows], self.pad_id)
        batch = {"input_ids": ids, "attention_mask": mask, "pairs": len(rows)}
        if rows and "member_mask" in rows[0]:
            batch["member_mask"] = torch.tensor([list(r["member_mask"]) for r in rows], dtype=torch.float32)
        return batch

    def loss(self, module, data):
        device = next(module.parameters()).device
        scores = module(data["input_ids"].to(device), data["attention_mask"].to(device))
        n = data["pairs"]
        if scores.dim() == 1:
            return bradley_terry_sum(scores[:n], scores[n:])
        settings = self.config.rm.ensemble
        return ensemble_bradley_terry_sum(scores[:n], scores[n:], data["member_mask"].to(device), settings.aggregate,
                                          settings.std_weight)

    def save(self, model, tokenizer, out_dir: Path) -> None:
        """An HF directory plain transformers loads; LoRA runs also keep their adapter in adapter/.
        An ensemble: one such directory per member and the manifest `load_scorer` reads."""
        info = {"base_model": self.config.model, "max_length": self.config.data.max_length,
                "trainable": self.config.trainable, "prompt_format": self.config.data.prompt_format}
        if isinstance(model, RewardEnsembleModule):
            from raylign.scoring.ensemble import write_manifest

            names = [f"member_{m}" for m in range(len(model.members))]
            for name, member in zip(names, model.members):
                (out_dir / name).mkdir(parents=True, exist_ok=True)
                self._save_one(member, tokenizer, out_dir / name, info)
            settings = self.config.rm.ensemble
            write_manifest(out_dir, names, settings, {**info, "subset_fraction": settings.subset_fraction})
            (out_dir / "raylign_rm.json").write_text(json.dumps({**info, "ensemble": len(names)}))
            return
        self._save_one(model, tokenizer, out_dir, info)

    @staticmethod
    def _save_one(model, tokenizer, out_dir: Path, info: dict) -> None:
        if hasattr(model, "merge_and_unload"):
            model.save_pretrained(out_dir / "adapter")
            model = model.merge_and_unload()
        model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out_dir, safe_serialization=True)
        tokenizer.save_pretrained(out_dir)
        (out_dir / "raylign_rm.json").write_text(json.dumps(info))


def export_after_training(recipe, summary: dict) -> dict:
    """`rm.export_delta`: the trained model as a weight delta against its base (what ships)."""
    if not recipe.rm.export_delta:
        return summary
    from raylign.models.registry import resolve_model
    from raylign.models.shipped import export_delta

    export_delta(Path(recipe.output_dir), resolve_model(recipe.model), Path(recipe.rm.export_delta),
                 recipe.data.max_length, recipe.model, recipe.data.prompt_format)
    return {**summary, "delta": recipe.rm.export_delta}
