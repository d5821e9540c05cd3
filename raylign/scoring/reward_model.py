"""Reward-model scoring: one pooling rule and one scorer shared by training, eval, Serve and actors.

A reward model is a Hugging Face `AutoModelForSequenceClassification` with
`num_labels=1`, so checkpoints load with plain transformers. The scalar is read at
the **last non-pad token** (from the attention mask, so left and right padding give
the same position) by `sequence_scores`, which trainers and scorers both call.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import nn

from raylign.scoring.text import OverLongPair, PairTooLongError, encode_scored_pair

log = logging.getLogger(__name__)

PaddingSide = Literal["left", "right"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last attended position in each row, for left or right padding alike."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=-1)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: PaddingSide = "right"):
    """(input_ids, attention_mask) tensors for token-id lists of different lengths."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if not seq:
            continue
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def length_sorted_chunks(sequences: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Indices of `sequences` in batches of similar length (less compute spent on padding); the
    caller puts results back by index."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def to_right_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Move left padding to the right (rows rotated), for heads that pool a fixed position."""
    leading = (attention_mask.cumsum(-1) == 0).sum(-1, keepdim=True)
    if not bool(leading.any()):
        return input_ids, attention_mask
    width = attention_mask.shape[-1]
    index = (torch.arange(width, device=attention_mask.device).unsqueeze(0) + leading) % width
    return input_ids.gather(-1, index), attention_mask.gather(-1, index)


def _parts(model: nn.Module):
    """(backbone, scalar head) of a seq-cls model, looking through a peft wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    head = getattr(inner, "score", None)
    return backbone, head


def _accepts(module: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def sequence_scores(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One float32 score per row: the head applied to the hidden state of the last non-pad token.

    Decoder models with a `score` head (Llama, Qwen, GPT-2, Mistral, ...) are pooled
    here from the attention mask. Encoders whose head pools the first token (BERT,
    RoBERTa) keep their own pooling, which is what plain transformers computes too.
    """
    backbone, head = _parts(model)
    if backbone is None or head is None:
        input_ids, attention_mask = to_right_padding(input_ids, attention_mask)
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if _accepts(backbone, "position_ids"):
        # Positions count real tokens only, so a left-padded row sees the positions a
        # right-padded one does (and plain transformers uses with right padding).
        kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    if _accepts(backbone, "use_cache"):
        kwargs["use_cache"] = False
    hidden = backbone(**kwargs).last_hidden_state
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    pooled = hidden[rows, last_token_index(attention_mask)]
    return head(pooled.to(head.weight.dtype))[:, 0].float()


class PairScorer(nn.Module):
    """nn.Module around a seq-cls model whose forward returns `sequence_scores`.

    Distributed data parallel wrappers hook `forward`, so training goes through this
    module rather than calling the backbone directly.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return sequence_scores(self.model, input_ids, attention_mask)


def load_reward_model(path: str | Path, dtype: str = "float32", head_seed: int = 0):
    """(model, tokenizer, has_head) from a local directory.

    A causal-LM checkpoint gets a fresh scalar head, drawn from `head_seed` so every
    worker and replica starts from the same one; `has_head` says whether the
    directory held a trained head.
    """
    from transformers import AutoModelForSequenceClassification

    from raylign.models.chat import load_tokenizer

    tokenizer = load_tokenizer(str(path))
    with torch.random.fork_rng():
        torch.manual_seed(head_seed)
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=1, dtype=DTYPES[dtype], output_loading_info=True
        )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    has_head = not any(key.split(".")[0] in ("score", "classifier") for key in info.get("missing_keys", []))
    return model, tokenizer, has_head


def _trained_info(model_dir: str | Path) -> dict:
    """What a raylign-trained reward model records about its training (raylign_rm.json), or {}."""
    import json

    info = Path(model_dir) / "raylign_rm.json"
    return json.loads(info.read_text()) if info.exists() else {}


def trained_max_length(model_dir: str | Path, default: int = 512) -> int:
    """The max_length a raylign-trained reward model was trained with (raylign_rm.json)."""
    return int(_trained_info(model_dir).get("max_length") or default)


def trained_prompt_format(model_dir: str | Path) -> str:
    """The text form a reward model was trained on ("chat" unless raylign_rm.json says otherwise),
    so every scorer reads pairs as training did."""
    from raylign.models.chat import check_prompt_format

    value = _trained_info(model_dir).get("prompt_format") or "chat"
    try:
        return check_prompt_format(value)
    except ValueError as err:
        raise ValueError(f"{Path(model_dir) / 'raylign_rm.json'}: {err}") from None


class PairScoring:
    """What every scorer offers on top of its `encode` and `score_ids` (a reward model's, an
    ensemble's): pairs and rollout rows in, one score each out."""

    def encode(self, prompt, response: str):
        raise NotImplementedError

    def score_ids(self, sequences: list) -> list[float]:
        raise NotImplementedError

    def score(self, prompts: Sequence, responses: Sequence[str]) -> list[float]:
        """prompts: strings, message lists or row dicts; raises PairTooLongError under over_long='drop'."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_ids([self.encode(p, r) for p, r in zip(prompts, responses)])

    def score_rows(self, rows: list[dict]) -> list[float]:
        """Rollout rows carrying `messages` (or `prompt`) and `response`."""
        return self.score(rows, [row["response"] for row in rows])


class RewardScorer(PairScoring):
    """Scores (prompt, response) pairs with a loaded reward model, in batches, without grad."""

    def __init__(
        self,
        model_path: str | Path,
        max_length: int = 512,
        batch_size: int = 16,
        dtype: str = "float32",
        over_long: OverLongPair = "truncate",
        prompt_format: str | None = None,
    ):
        """prompt_format: None = the one the model was trained on (`trained_prompt_format`)."""
        from raylign.models.registry import resolve_model

        self.model_path = str(resolve_model(model_path))
        if prompt_format is None:
            self.prompt_format = trained_prompt_format(self.model_path)
        else:
            from raylign.models.chat import check_prompt_format

            self.prompt_format = check_prompt_format(prompt_format)
        self.model, self.tokenizer, has_head = load_reward_model(self.model_path, dtype)
        if not has_head:
            log.warning(
                "%s has no trained reward head: its scores come from a fixed random head. "
                "Train one with `raylign train rm` or use a reward model such as hh-rm-smollm2.",
                self.model_path,
            )
        self.model.eval()
        self.max_length = max_length
        self.batch_size = batch_size
        self.over_long = over_long

    def encode(self, prompt, response: str) -> list[int]:
        return encode_scored_pair(self.tokenizer, prompt, response, self.max_length, self.over_long,
                                  self.prompt_format)

    def score_ids(self, sequences: list[list[int]]) -> list[float]:
        pad_id = self.model.config.pad_token_id
        by_index: dict[int, float] = {}
        with torch.inference_mode():
            for chunk in length_sorted_chunks(sequences, self.batch_size):
                ids, mask = pad_batch([sequences[i] for i in chunk], pad_id)
                for i, value in zip(chunk, sequence_scores(self.model, ids, mask).tolist()):
                    by_index[i] = value
        return [by_index[i] for i in range(len(sequences))]



__all__ = [
    "PairScorer",
    "PairTooLongError",
    "RewardScorer",
    "last_token_index",
    "length_sorted_chunks",
    "load_reward_model",
    "pad_batch",
    "sequence_scores",
    "trained_max_length",
    "trained_prompt_format",
]
