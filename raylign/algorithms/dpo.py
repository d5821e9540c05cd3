"""DPO (`raylign train dpo`) and its variants (IPO, conservative / label-smoothed DPO).

The loss is a pure tensor function that offline DPO and online DPO (pairs sampled and ranked
in the loop, `online_dpo.py`) share; both feed it the **summed** response log-probs (EOS
included) of the policy and of the frozen reference, one value per sequence. See
ALGORITHMS.md, DPO.

Offline, as Ray Data stages per split: preference rows -> prompt ids (chat template, generation
prompt) and response ids (ending with EOS) -> the frozen reference's summed response log-probs,
computed once in a first pass by an actor pool holding the reference model
(`ReferenceLogprobs`), so the training workers hold only the policy.

    raylign train dpo --config jobs/dpo_hh.yaml [key.sub=value ...]
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from raylign.algorithms.core import masked_sum
from raylign.algorithms.objective import OfflineObjective
from raylign.config import StrictModel
from raylign.models.sequences import pack_prompt_responses, token_logprobs
from raylign.scoring.reference import ReferenceConfig

DPOLossType = Literal["sigmoid", "ipo", "conservative"]


class DPOConfig(StrictModel):
    beta: float = Field(0.1, gt=0.0)
    loss_type: DPOLossType = "sigmoid"
    # conservative DPO (Mitchell 2023): the label is flipped with this probability
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    # validation metric kept as best (max; "loss" and "dpo_loss" by min)
    select_by: Literal["reward_accuracy", "reward_margin", "logprob_accuracy", "loss", "dpo_loss"] = "reward_accuracy"


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float = 0.1,
    loss_type: DPOLossType = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[Tensor, float, dict[str, float]]:
    """Per-pair DPO loss, summed over the B pairs: returns (loss_sum, B, metrics).

    With h = (logpi(y_w) - logref(y_w)) - (logpi(y_l) - logref(y_l)):
    - sigmoid:      -log sigma(beta * h)
    - conservative: -(1 - eps) log sigma(beta * h) - eps log sigma(-beta * h)
    - ipo:          (h - 1 / (2 beta))^2   (Azar et al.; h on summed log-probs as here)
    The trainer divides the sum by the all-reduced number of pairs, so uneven shards
    weigh every pair the same. Metrics: mean loss, implicit-reward accuracy and margin.
    """
    tensors = (policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1 or policy_chosen.dim() != 1:
        raise ValueError(f"DPO inputs must be four [B] tensors of one shape, got {[tuple(t.shape) for t in tensors]}")
    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_reward = policy_chosen - ref_chosen.to(policy_chosen)
    rejected_reward = policy_rejected - ref_rejected.to(policy_rejected)
    h = chosen_reward - rejected_reward
    if loss_type == "sigmoid":
        per_pair = -F.logsigmoid(beta * h)
    elif loss_type == "conservative":
        per_pair = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        per_pair = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type '{loss_type}' (sigmoid, ipo, conservative)")
    count = float(h.shape[0])
    with torch.no_grad():
        metrics = {
            "dpo_loss": float(per_pair.mean()) if count else 0.0,
            # ties (policy == reference, e.g. before the first step) count half, as in the RM's accuracy
            "reward_accuracy": float(((h > 0).float() + 0.5 * (h == 0).float()).mean()) if count else 0.0,
            "reward_margin": float((beta * h).mean()) if count else 0.0,
            "chosen_reward": float((beta * chosen_reward).mean()) if count else 0.0,
            "rejected_reward": float((beta * rejected_reward).mean()) if count else 0.0,
        }
    return per_pair.sum(), count, metrics


class TokenizePreferences:
    """Ray Data stage: preference rows -> prompt_ids, chosen_ids, rejected_ids, length."""

    def __init__(self, model_path: str, max_length: int):
        self.model_path, self.max_length = model_path, max_length

    def __call__(self, table):
        import pyarrow as pa

        from raylign.models.chat import encode_row, load_tokenizer

        tokenizer = load_tokenizer(self.model_path)
        cols = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": [], "length": []}
        for row in table.to_pylist():
            prompt, (chosen, rejected) = encode_row(tokenizer, row, ("chosen", "rejected"), self.max_length)
            cols["prompt_ids"].append(prompt)
            cols["chosen_ids"].append(chosen)
            cols["rejected_ids"].append(rejected)
            cols["length"].append(min(self.max_length, len(prompt) + max(len(chosen), len(rejected))))
        ids = pa.list_(pa.int32())
        return pa.table({"prompt_ids": pa.array(cols["prompt_ids"], ids), "chosen_ids": pa.array(cols["chosen_ids"], ids),
                         "rejected_ids": pa.array(cols["rejected_ids"], ids), "length": pa.array(cols["length"], pa.int32())})


def pair_batch(rows: list[dict], pad_id: int, max_length: int) -> dict:
    """Chosen rows then rejected rows in one right-padded [2B, L] batch (one forward pass)."""
    prompts = [r["prompt_ids"] for r in rows] * 2
    responses = [r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows]
    return pack_prompt_responses(prompts, responses, pad_id, max_length)


def summed_logprobs(model, batch: dict) -> torch.Tensor:
    """Summed response-token log-probs per row [2B] (EOS included)."""
    return masked_sum(token_logprobs(model, batch), batch["response_mask"], dim=-1)


class ReferenceLogprobs:
    """Ray Data actor stage: add ref_chosen / ref_rejected from the frozen reference model."""

    def __init__(self, model_path: str, max_length: int, batch_size: int, bf16: bool, threads: int):
        from transformers import AutoModelForCausalLM

        from raylign.models.chat import load_tokenizer

        torch.set_num_threads(max(1, threads))
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        self.pad_id = load_tokenizer(model_path).pad_token_id
        self.max_length, self.batch_size, self.bf16 = max_length, batch_size, bf16

    def __call__(self, table):
        import pyarrow as pa

        rows = table.to_pylist()
        chosen, rejected = [0.0] * len(rows), [0.0] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: rows[i]["length"])
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)
        with torch.no_grad(), autocast:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                sums = summed_logprobs(self.model, pair_batch([rows[i] for i in chunk], self.pad_id, self.max_length))
                for j, i in enumerate(chunk):
                    chosen[i], rejected[i] = float(sums[j]), float(sums[len(chunk) + j])
        return table.append_column("ref_chosen", pa.array(chosen, pa.float64())).append_column(
            "ref_rejected", pa.array(rejected, pa.float64()))


class DPOObjective(OfflineObjective):
    name = "dpo"
    config_class = DPOConfig
    section = "dpo"
    extra_sections = {"reference": ReferenceConfig}
    recipe_defaults = {"data": {"format": "hh"}, "optim": {"lr": 5e-6},
                       "reference": {"num_cpus": 1.0}}
    renamed_keys = {"select_by": "dpo.select_by"}
    row_kind = "preference"
    unit = "pairs"
    select_mode = "max"

    def __init__(self, config):
        super().__init__(config)
        self.select_metric = config.dpo.select_by
        self.select_mode = "min" if config.dpo.select_by in ("loss", "dpo_loss") else "max"

    def prepare_dataset(self, ds, model_path: str):
        from raylign.models.registry import resolve_model

        cfg, ref = self.config, self.config.reference
        ref_path = str(resolve_model(ref.model)) if ref.model else model_path
        tokens = ds.map_batches(TokenizePreferences(model_path, cfg.data.max_length), batch_format="pyarrow",
                                batch_size=64)
        return tokens.map_batches(
            ReferenceLogprobs, fn_constructor_args=(ref_path, cfg.data.max_length, ref.batch_size, cfg.bf16,
                                                    ref.threads or round(ref.num_cpus)),
            batch_format="pyarrow", batch_size=64, concurrency=ref.concurrency, num_cpus=ref.num_cpus,
            num_gpus=ref.num_gpus or None)

    def stage_cpus(self) -> dict[str, float]:
        ref = self.config.reference
        return {f"reference.num_cpus={ref.num_cpus:g} x reference.concurrency={ref.concurrency}":
                ref.num_cpus * ref.concurrency}

    def collate(self, rows: list[dict]) -> dict:
        batch = pair_batch(rows, self.pad_id, self.config.data.max_length)
        batch["ref_chosen"] = torch.tensor([r["ref_chosen"] for r in rows], dtype=torch.float32)
        batch["ref_rejected"] = torch.tensor([r["ref_rejected"] for r in rows], dtype=torch.float32)
        return batch

    def loss(self, module, data):
        sums = summed_logprobs(module, data)
        n = data["ref_chosen"].shape[0]
        d = self.config.dpo
        loss_sum, count, metrics = dpo_loss(sums[:n], sums[n:], data["ref_chosen"], data["ref_rejected"], d.beta,
                                            d.loss_type, d.label_smoothing)
        with torch.no_grad():
            # Does the model itself (not the ratio) prefer chosen? Before training: the reference's answer.
            metrics["logprob_accuracy"] = float((sums[:n] > sums[n:]).float().mean())
            metrics["ref_logprob_accuracy"] = float((data["ref_chosen"] > data["ref_rejected"]).float().mean())
        return loss_sum, count, metrics
