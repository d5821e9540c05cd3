"""Offline DPO (`raylign train dpo`): preference pairs, a frozen reference, `dpo_loss`.

Ray Data stages, per split: preference rows -> prompt ids (chat template, generation
prompt) and response ids (ending with EOS) -> the frozen reference's **summed** response
log-probs, computed once in a first pass by an actor pool holding the reference model
(`ReferenceLogprobs`), so the training workers hold only the policy. Loss: `dpo_loss`
(sigmoid, IPO or conservative; ALGORITHMS.md, DPO) over summed response log-probs.

    raylign train dpo --config jobs/dpo_hh.yaml [key.sub=value ...]
"""

from __future__ import annotations

import json

import torch

from raylign.algorithms.dpo import DPOConfig, dpo_loss, sequence_logprobs
from raylign.config import StrictModel
from raylign.models.sequences import pack_prompt_responses, token_logprobs
from raylign.training.objective import OfflineObjective
from raylign.training.offline_config import OfflineDataConfig, OfflineTrainConfig


class ReferenceSettings(StrictModel):
    model: str | None = None  # default: the policy's starting model
    batch_size: int = 8  # pairs per reference forward
    num_cpus: float = 1.0  # per reference actor (one actor; raise `concurrency` on a cluster)
    # torch threads in the reference actor (default: num_cpus rounded). On a small machine,
    # reserving every CPU for the actor starves the tokenising tasks that feed it (Ray Data
    # waits forever), so reserve 1 CPU and run more threads than that instead.
    threads: int | None = None
    concurrency: int = 1
    num_gpus: float = 0.0


class DPOTrainConfig(OfflineTrainConfig):
    output_dir: str = "runs/dpo"
    data: OfflineDataConfig = OfflineDataConfig(format="hh")
    dpo: DPOConfig = DPOConfig()
    reference: ReferenceSettings = ReferenceSettings()
    lr: float = 5e-6
    select_by: str = "reward_accuracy"  # validation metric kept as best (max); "loss" selects by min


class TokenizePreferences:
    """Ray Data stage: preference rows -> prompt_ids, chosen_ids, rejected_ids, length."""

    def __init__(self, model_path: str, max_length: int):
        self.model_path, self.max_length = model_path, max_length

    def __call__(self, table):
        import pyarrow as pa

        from raylign.models.chat import (
            as_messages,
            encode_prompt,
            encode_response,
            load_tokenizer,
        )

        tokenizer = load_tokenizer(self.model_path)
        cols = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": [], "length": []}
        for row in table.to_pylist():
            prompt = encode_prompt(tokenizer, as_messages(row), self.max_length)
            chosen = encode_response(tokenizer, row["chosen"], self.max_length)
            rejected = encode_response(tokenizer, row["rejected"], self.max_length)
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
    return sequence_logprobs(token_logprobs(model, batch), batch["response_mask"])


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


def check_reference_cpus(ref: ReferenceSettings) -> None:
    """Fail at once (not after an endless wait) when the reference actors would hold every
    CPU of the cluster and leave none for the tasks that read and tokenise their input."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    if total - ref.num_cpus * ref.concurrency < 1:
        from raylign.config import ConfigError

        raise ConfigError(f"reference.num_cpus={ref.num_cpus:g} x reference.concurrency={ref.concurrency} leaves "
                          f"no CPU of the cluster's {total:g} for the tokenising tasks that feed the reference "
                          f"(Ray Data would wait forever); lower it and set reference.threads instead")


class DPOObjective(OfflineObjective):
    name = "dpo"
    row_kind = "preference"
    unit = "pairs"
    select_mode = "max"

    def __init__(self, config: DPOTrainConfig):
        super().__init__(config)
        self.select_metric = config.select_by
        self.select_mode = "min" if config.select_by == "loss" else "max"

    def prepare_dataset(self, ds, model_path: str):
        from raylign.models.registry import resolve_model

        cfg, ref = self.config, self.config.reference
        check_reference_cpus(ref)
        ref_path = str(resolve_model(ref.model)) if ref.model else model_path
        tokens = ds.map_batches(TokenizePreferences(model_path, cfg.data.max_length), batch_format="pyarrow",
                                batch_size=64)
        return tokens.map_batches(
            ReferenceLogprobs, fn_constructor_args=(ref_path, cfg.data.max_length, ref.batch_size, cfg.bf16,
                                                    ref.threads or round(ref.num_cpus)),
            batch_format="pyarrow", batch_size=64, concurrency=ref.concurrency, num_cpus=ref.num_cpus,
            num_gpus=ref.num_gpus or None)

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


def run(config: DPOTrainConfig) -> dict:
    from raylign.training.offline_trainer import run_offline

    summary = run_offline(config, DPOObjective(config))
    print(f"[dpo] done: {json.dumps(summary)}", flush=True)
    return summary


def main(argv: list[str]) -> int:
    from raylign.cli import run_recipe

    run_recipe(argv, "train dpo", "Direct preference optimisation (DPO, IPO, conservative) on Ray Train.", DPOTrainConfig, run)
    return 0
