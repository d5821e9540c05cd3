"""RAFT (`raylign train raft`): reward-ranked fine-tuning (Dong et al., 2023), a.k.a. expert iteration.

Each step samples K responses per prompt, drops degenerate ones, keeps the best
(per prompt in "local" mode, the global top fraction in "top" mode) and fine-tunes on
them with the ordinary LM loss. The degenerate filter matters: without it LMFlow saw
diversity collapse. See /work/shared/ALGORITHMS.md, section RAFT. The optimizer (and its
state) lives for the whole run, so a run of many steps is many rounds of expert iteration
on fresh samples.

Rows are dicts with keys prompt_uid, reward, response, response_token_ids, finish_reason.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from raylign.algorithms.base import (
    Algorithm,
    TrainContext,
    UpdateConfig,
    policy_rows,
    response_token_count,
    rows_logprobs,
)
from raylign.algorithms.core import safe_mean, sequence_nll
from raylign.config import Retired, StrictModel

CHAT_MARKERS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "Human:", "Assistant:"]


class RAFTConfig(StrictModel):
    mode: Literal["local", "top"] = "local"
    top_fraction: float = 0.125  # "top" mode: share of all valid samples kept
    min_response_tokens: int = 2  # EOS included
    # loop filter: reject when some n-gram of `ngram_size` token ids occurs more than
    # `max_repeated_ngram` times in the response; None disables it
    ngram_size: int = 4
    max_repeated_ngram: int | None = 4
    # a response that starts a new chat turn is the model talking to itself
    reject_markers: list[str] = list(CHAT_MARKERS)
    reject_truncated: bool = False  # drop responses that hit max_tokens (finish_reason "length")
    # keep only samples whose reward reaches this: expert iteration on a checkable task trains on
    # correct answers only, never on a prompt's least-wrong one; None keeps each prompt's best
    min_reward: float | None = None


def _max_ngram_count(token_ids: list[int], n: int) -> int:
    if n <= 0 or len(token_ids) < n:
        return 0
    grams = Counter(tuple(token_ids[i:i + n]) for i in range(len(token_ids) - n + 1))
    return max(grams.values())


def is_degenerate(text: str, token_ids: list[int], finish_reason: str | None,
                  config: RAFTConfig) -> str | None:
    """Why a sample must not be trained on, or None if it is fine.

    Reasons, checked in this order: "empty" (blank text), "too_short" (fewer than
    min_response_tokens tokens), "truncated" (only with reject_truncated),
    "chat_marker" (a turn marker inside the text), "repetition" (an n-gram loop).
    """
    token_ids = list(token_ids)
    if not text or not text.strip():
        return "empty"
    if len(token_ids) < config.min_response_tokens:
        return "too_short"
    if config.reject_truncated and finish_reason == "length":
        return "truncated"
    if any(marker and marker in text for marker in config.reject_markers):
        return "chat_marker"
    if config.max_repeated_ngram is not None and \
            _max_ngram_count(token_ids, config.ngram_size) > config.max_repeated_ngram:
        return "repetition"
    return None


def select_best(rows: list[dict], config: RAFTConfig) -> tuple[list[dict], dict[str, float]]:
    """The rows to fine-tune on, and counts for the step's metrics.

    local: per prompt_uid, the highest-reward non-degenerate row (first on ties);
    a prompt whose samples are all degenerate contributes nothing.
    With `min_reward`, rows below it are dropped first (counted apart from the degenerate ones).
    top: the global top `top_fraction` of all non-degenerate rows by reward (at least
    one if any is valid; ties keep the earlier row). Kept rows are the input dicts,
    in input order for "local" (prompt first seen) and by descending reward for "top".
    """
    if not 0.0 < config.top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {config.top_fraction}")
    reasons: Counter = Counter()
    valid: list[tuple[int, dict]] = []
    prompts: dict = {}
    for i, row in enumerate(rows):
        prompts.setdefault(row["prompt_uid"], None)
        reason = is_degenerate(row["response"], row["response_token_ids"], row.get("finish_reason"), config)
        if reason is None:
            valid.append((i, row))
        else:
            reasons[reason] += 1

    below, non_degenerate = 0, len(valid)
    if config.min_reward is not None:
        reaching = [(i, row) for i, row in valid if float(row["reward"]) >= config.min_reward]
        below, valid = len(valid) - len(reaching), reaching
    if config.mode == "local":
        best: dict = {}
        for i, row in valid:
            uid = row["prompt_uid"]
            if uid not in best or float(row["reward"]) > float(best[uid][1]["reward"]):
                best[uid] = (i, row)
        kept = [row for _, row in sorted(best.values(), key=lambda item: item[0])]
    elif config.mode == "top":
        ranked = sorted(valid, key=lambda item: (-float(item[1]["reward"]), item[0]))
        n_keep = max(1, int(config.top_fraction * len(ranked))) if ranked else 0
        kept = [row for _, row in ranked[:n_keep]]
    else:
        raise ValueError(f"unknown RAFT mode '{config.mode}' (local, top)")

    stats: dict[str, float] = {
        "num_samples": float(len(rows)),
        "num_prompts": float(len(prompts)),
        "num_valid": float(non_degenerate),
        "num_degenerate": float(sum(reasons.values())),
        "num_below_min_reward": float(below),
        "num_kept": float(len(kept)),
        "prompts_without_valid": float(len(prompts) - len({r["prompt_uid"] for _, r in valid})),
        "kept_reward_mean": safe_mean(sum(float(r["reward"]) for r in kept), len(kept)),
        "all_reward_mean": safe_mean(sum(float(r["reward"]) for r in rows), len(rows)),
    }
    for reason in ("empty", "too_short", "truncated", "chat_marker", "repetition"):
        stats[f"degenerate_{reason}"] = float(reasons[reason])
    return kept, stats


class RAFTAlgorithm(Algorithm):
    """One unit = one kept response; the loss is its token-mean NLL over the global batch."""

    name = "raft"
    config_class = RAFTConfig
    section = "raft"
    update = UpdateConfig(epochs=1, num_minibatches=1, micro_batch_size=4)
    renamed_keys = {"reference.kl_coef": Retired("RAFT has no KL term")}

    def select(self, rows: list[dict], step: int):
        kept, stats = select_best(policy_rows(rows), self.config)
        return kept, {f"raft_{k}": float(v) for k, v in stats.items()}

    def unit_weight(self, unit: dict) -> float:
        return float(response_token_count(unit, self.max_length))

    def loss(self, module, units: list[dict], context: TrainContext):
        logprobs, batch = rows_logprobs(module, units, context)
        return sequence_nll(logprobs, batch["response_mask"])
