"""`raylign train quark`: Quark (quantized reward conditioning) on the engine.

The control tokens `<|reward_0|>` (best) .. `<|reward_{Q-1}|>` are added to the vocabulary
once, when the model is prepared (a copy under the run's folder), so samplers, trainer and
reference all load the same vocabulary and it never changes mid-run. Rollouts are sampled
conditioned on the best token, join a pool kept on the driver (saved per step, so a resumed
run gets it back: `raylign.engine.algorithm_state`), are re-ranked into reward quantiles
over the whole pool (`rank_by: group_relative`: of each reward minus its prompt's mean), and the policy learns each response conditioned on its
quantile's token, plus a KL term to the reference (which sees the plain prompt).
"""

from __future__ import annotations

from pathlib import Path

import torch

from raylign.algorithms.base import (
    Algorithm,
    TrainContext,
    UpdateConfig,
    policy_rows,
    response_token_count,
    rows_logprobs,
)
from raylign.algorithms.kl import scatter_response_values
from raylign.algorithms.online_job import OnlineJobConfig, online_main
from raylign.algorithms.quark import QuarkConfig, QuarkPool, control_tokens, quark_loss


class QuarkJobConfig(OnlineJobConfig):
    quark: QuarkConfig = QuarkConfig()


def add_control_tokens(model_path: str, out_dir: Path, tokens: list[str]) -> str:
    """A copy of the model whose tokenizer and embeddings know the control tokens. Each new
    row is the mean of the existing ones (a neutral start, a low logit through a tied head)
    plus its own small seeded offset: with `trainable_layers` the embeddings stay frozen, and
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
    needs_reference = True
    update = UpdateConfig(epochs=1, num_minibatches=1, micro_batch_size=4)

    def __init__(self, config: QuarkConfig, max_length: int):
        self.config = config
        self.max_length = max_length
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


def make_algorithm(config: QuarkJobConfig) -> QuarkAlgorithm:
    return QuarkAlgorithm(config.quark, config.engine.trainer.max_length)


def main(argv: list[str]) -> int:
    return online_main(argv, "train quark", "Quark: reward-quantile control tokens, conditioned LM loss + KL.",
                       QuarkJobConfig, make_algorithm, "quark")
