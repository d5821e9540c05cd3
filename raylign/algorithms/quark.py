"""Quark (`raylign train quark`): quantized reward conditioning (Lu et al., 2022), AlpacaFarm variant.

Rollouts accumulate in a pool; the pool is sorted by reward and cut into Q quantiles,
each named by a control token (0 = best). The policy is trained with the LM loss on
responses conditioned on their quantile's token, plus beta * KL to the reference,
and samples new rollouts conditioned on the best token. AlpacaFarm's default trains
only on the best quantile (filtered SFT + KL). See /work/shared/ALGORITHMS.md, Quark.

`rank_by: group_relative` ranks each rollout by its reward minus the mean reward of its
prompt's rollouts in the pool. With a reward model whose score depends mostly on the
prompt (hh-rm: about 70% of the pool's reward variance is between prompts), global
quantiles select easy prompts rather than better responses, and the policy learns little.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

import torch
from pydantic import Field
from torch import Tensor

from raylign.algorithms.base import (
    Algorithm,
    TrainContext,
    UpdateConfig,
    policy_rows,
    response_token_count,
    rows_logprobs,
    scatter_response_values,
)
from raylign.algorithms.core import check_same_shape, k3, masked_fill_zero, safe_mean
from raylign.algorithms.estimators import group_advantages
from raylign.config import Retired, StrictModel


class QuarkConfig(StrictModel):
    num_quantiles: int = 4
    kl_coef: float = Field(0.05, ge=0.0)
    pool_size: int = 256
    train_best_only: bool = True
    rank_by: Literal["reward", "group_relative"] = "reward"


def control_tokens(num_quantiles: int) -> list[str]:
    """["<|reward_0|>", ..., "<|reward_{Q-1}|>"]; index 0 is the best quantile."""
    if num_quantiles < 1:
        raise ValueError(f"num_quantiles must be >= 1, got {num_quantiles}")
    return [f"<|reward_{i}|>" for i in range(num_quantiles)]


def quantile_sizes(n: int, num_quantiles: int) -> list[int]:
    """Split n ranked rows into Q nearly equal runs, the larger runs first (best quantiles)."""
    base, extra = divmod(n, num_quantiles)
    return [base + (1 if q < extra else 0) for q in range(num_quantiles)]


class QuarkPool:
    """The reward-sorted rollout pool, kept across steps (plain Python, picklable).

    Holds at most pool_size rows; adding more drops the oldest. Quantiles are by rank
    (of the reward, or of the prompt-relative reward) over the whole pool; equal scores
    rank the more recently added row first (it came from the newer policy), which keeps
    the assignment deterministic.
    """

    def __init__(self, num_quantiles: int = 4, pool_size: int = 256, rank_by: str = "reward"):
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        self.tokens = control_tokens(num_quantiles)
        self.num_quantiles = num_quantiles
        self.pool_size = pool_size
        if rank_by not in ("reward", "group_relative"):
            raise ValueError(f"rank_by must be 'reward' or 'group_relative', got {rank_by!r}")
        self.rank_by = rank_by
        self.rows: list[dict] = []  # oldest first
        self._added = 0  # insertion counter, the tie-breaker

    @classmethod
    def from_config(cls, config: QuarkConfig) -> "QuarkPool":
        return cls(config.num_quantiles, config.pool_size, config.rank_by)

    @property
    def best_token(self) -> str:
        """The control token new rollouts are conditioned on."""
        return self.tokens[0]

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, rows: Iterable[dict]) -> None:
        """Append scored rollout rows (each needs a finite `reward`), evicting the oldest."""
        for row in rows:
            reward = float(row["reward"])
            if reward != reward or reward in (float("inf"), float("-inf")):
                raise ValueError(f"Quark pool rewards must be finite, got {row['reward']!r}")
            self.rows.append({**row, "_pool_seq": self._added})
            self._added += 1
        if len(self.rows) > self.pool_size:
            del self.rows[: len(self.rows) - self.pool_size]

    def state_dict(self) -> dict:
        """The pooled rows and the insertion counter (JSON-safe: rows are plain rollout dicts)."""
        return {"rows": self.rows, "added": self._added}

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict`; a smaller pool_size than the saved pool's keeps the newest rows."""
        rows = list(state["rows"])
        self.rows = rows[max(0, len(rows) - self.pool_size):]
        self._added = int(state["added"])

    def ranking_scores(self) -> list[float]:
        """What the quantiles rank: the reward, or the reward minus the mean reward of the
        pooled rows of the same prompt (`prompt_uid`; a row without one is its own group)."""
        rewards = [float(r["reward"]) for r in self.rows]
        if self.rank_by == "reward":
            return rewards
        groups = [row.get("prompt_uid", ("row", row["_pool_seq"])) for row in self.rows]
        return group_advantages(rewards, groups, "dr_grpo").tolist()  # r - its group's mean

    def quantiles(self) -> list[int]:
        """The quantile (0 = best) of each pooled row, aligned with self.rows."""
        scores = self.ranking_scores()
        order = sorted(range(len(self.rows)), key=lambda i: (-scores[i], -self.rows[i]["_pool_seq"]))
        out = [0] * len(self.rows)
        start = 0
        for q, size in enumerate(quantile_sizes(len(order), self.num_quantiles)):
            for i in order[start:start + size]:
                out[i] = q
            start += size
        return out

    def training_rows(self, best_only: bool = True) -> list[dict]:
        """Copies of the pooled rows with `quantile` and `control_token` set (oldest first).

        best_only keeps quantile 0 only (AlpacaFarm's default).
        """
        result = []
        for row, q in zip(self.rows, self.quantiles()):
            if best_only and q != 0:
                continue
            clean = {k: v for k, v in row.items() if k != "_pool_seq"}
            result.append({**clean, "quantile": q, "control_token": self.tokens[q]})
        return result


def quark_loss(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor,
               kl_coef: float = 0.05) -> tuple[Tensor, float, dict[str, float]]:
    """Sum over response tokens of -logpi + kl_coef * k3(pi || ref): (loss_sum, #tokens, metrics).

    logprobs are of the response conditioned on the row's control token; the KL term
    keeps the conditioned policy near the reference so it does not just memorise the pool.
    """
    check_same_shape(logprobs=logprobs, ref_logprobs=ref_logprobs, mask=mask)
    m = mask.to(logprobs.device).bool()
    nll = -masked_fill_zero(logprobs, m)
    kl = k3(logprobs, ref_logprobs.detach(), m)
    loss_sum = (nll + kl_coef * kl).sum()
    count = float(m.sum())
    with torch.no_grad():
        metrics = {
            "loss": safe_mean(loss_sum, count),
            "nll": safe_mean(nll.sum(), count),
            "kl": safe_mean(kl.sum(), count),
        }
    return loss_sum, count, metrics


def add_control_tokens(model_path: str, out_dir: Path, tokens: list[str]) -> str:
    """A copy of the model whose tokenizer and embeddings know the control tokens. Each new
    row is the mean of the existing ones (a neutral start, a low logit through a tied head)
    plus its own small seeded offset: with `trainable: top_layers` the embeddings stay frozen, and
    identical rows would leave the quantiles indistinguishable to the policy."""
    from filelock import FileLock
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir) + ".lock"):
        if (out_dir / "config.json").exists():
            return str(out_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        tokenizer.add_special_tokens({"additional_special_tokens": tokens})
        old = model.get_input_embeddings().weight.shape[0]
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            embeddings = model.get_input_embeddings().weight
            existing = embeddings[:old].float()
            offsets = torch.randn(len(embeddings) - old, embeddings.shape[1],
                                  generator=torch.Generator().manual_seed(0))
            embeddings[old:] = (existing.mean(0) + 0.5 * existing.std(0) * offsets).to(embeddings.dtype)
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        tmp.rename(out_dir)
    return str(out_dir)


class QuarkAlgorithm(Algorithm):
    """One unit = one pooled rollout conditioned on its quantile token."""

    name = "quark"
    config_class = QuarkConfig
    section = "quark"
    needs_reference = True
    update = UpdateConfig(epochs=1, num_minibatches=1, micro_batch_size=4)
    renamed_keys = {"reference.kl_coef": Retired("the KL coefficient is quark.kl_coef")}

    def __init__(self, config: QuarkConfig, max_length: int = 768):
        super().__init__(config, max_length)
        self.pool = QuarkPool.from_config(config)
        self.token_ids: dict[str, int] = {}

    def prepare_model(self, model_path: str, output_dir: str) -> str:
        from raylign.models.chat import load_tokenizer

        path = add_control_tokens(model_path, Path(output_dir).resolve().parent / f"{Path(output_dir).name}-quark-init",
                                  control_tokens(self.config.num_quantiles))
        tokenizer = load_tokenizer(path)
        self.token_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in control_tokens(self.config.num_quantiles)}
        return path

    def prepare_prompt(self, row: dict) -> dict:
        return {**row, "prompt_prefix_ids": [self.token_ids[self.pool.best_token]]}

    def generation_prefix(self) -> list[str]:
        return [self.pool.best_token]

    def select(self, rows: list[dict], step: int):
        fresh = []
        for row in policy_rows(rows):
            prefix = len(row.get("prompt_prefix_ids") or [])
            fresh.append({**row, "prompt_token_ids": list(row["prompt_token_ids"])[prefix:], "prompt_prefix_ids": []})
        self.pool.add(fresh)
        units = []
        for row in self.pool.training_rows(self.config.train_best_only):
            units.append({**row, "prompt_token_ids": [self.token_ids[row["control_token"]]] + row["prompt_token_ids"]})
        rewards = [float(r["reward"]) for r in self.pool.rows]
        return units, {"pool_size": float(len(self.pool)), "pool_reward_mean": sum(rewards) / len(rewards),
                       "trained_rollouts": float(len(units))}

    def state_dict(self) -> dict:
        return {"pool": self.pool.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.pool.load_state_dict(state["pool"])

    def unit_weight(self, unit: dict) -> float:
        return float(response_token_count(unit, self.max_length))

    def loss(self, module, units: list[dict], context: TrainContext):
        logprobs, batch = rows_logprobs(module, units, context)
        mask = batch["response_mask"]
        ref = scatter_response_values([u["ref_logprobs"] for u in units], mask)
        return quark_loss(logprobs, ref, mask, self.config.kl_coef)
