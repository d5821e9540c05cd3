"""Token batching and per-token log-probs for (prompt, response) pairs. Pure torch.

Every sequence-level loss (RRHF, RAFT, DPO, PPO, ...) needs the same two things: the
prompt and response concatenated into one right-padded batch with a mask that marks
only response tokens, and log pi(token_t | tokens_<t) for every position. Keeping them
here means each algorithm module only deals in [N, L] tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor


def fit_pair(prompt: list[int], response: list[int], max_length: int | None) -> tuple[list[int], list[int]]:
    """Cut one pair to max_length: drop prompt tokens from the left first (the end of the
    prompt is what conditions the response); truncate the response (from the right) only
    when it alone does not fit. One prompt token is kept when there is one, so the first
    response token still has a context to be predicted from."""
    if max_length is None or len(prompt) + len(response) <= max_length:
        return prompt, response
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    keep_prompt = min(len(prompt), 1) if max_length > 1 else 0
    response = response[: max_length - keep_prompt]
    room = max_length - len(response)
    prompt = prompt[len(prompt) - room:] if room > 0 else []
    return prompt, response


def pack_prompt_responses(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
                          max_length: int | None = None) -> dict[str, Tensor]:
    """Concatenate prompt + response per row into a right-padded batch.

    Returns int64 tensors [N, L] (L = longest packed row): input_ids (pad_id on padding),
    attention_mask (1 on prompt and response tokens) and response_mask (1 on response
    tokens only, including a final EOS if the response has one). Position 0 is never a
    response position, because nothing predicts it: a row with an empty prompt loses its
    first response token from the mask. Over-long rows: see `fit_pair`.
    """
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    rows = [fit_pair(list(p), list(r), max_length) for p, r in zip(prompt_ids, response_ids)]
    width = max([len(p) + len(r) for p, r in rows] + [1])
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    response_mask = torch.zeros((n, width), dtype=torch.long)
    for i, (prompt, response) in enumerate(rows):
        total = len(prompt) + len(response)
        if total:
            input_ids[i, :total] = torch.tensor(prompt + response, dtype=torch.long)
        attention_mask[i, :total] = 1
        response_mask[i, max(len(prompt), 1):total] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}


def model_device(model) -> torch.device:
    """Where the model's parameters live (CPU for a model without any)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def position_ids_of(attention_mask: Tensor) -> Tensor:
    """Position ids from the mask: right padding gives 0..len-1 on real tokens, and left
    padding (should a caller pass it) stays correct as well."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def _chunk_logprobs(model, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_of(attention_mask),
                   use_cache=False).logits
    return logits_to_token_logprobs(logits, input_ids, attention_mask)


def logits_to_token_logprobs(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """log pi(token_t | tokens_<t) at position t from a causal LM's logits [N, L, V]."""
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    # gather - logsumexp == log_softmax at the target, without a second [n, L, V] tensor
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=picked.device)
    out[:, 1:] = picked
    return out * attention_mask.to(out.dtype)


def token_logprobs(model, batch: dict, chunk_size: int | None = None) -> Tensor:
    """log pi(token_t | tokens_<t) at position t, float32 [N, L]; position 0 and padding get 0.

    `model` is a causal LM returning `.logits` (transformers). Gradients flow unless the
    caller wraps this in `torch.no_grad()` (reference models). `chunk_size` rows go
    through the model at a time, which bounds the [rows, L, vocab] logits tensor, the
    largest allocation here. Multiply by batch["response_mask"] to keep response tokens.
    """
    device = model_device(model)
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch.get("attention_mask")
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device)
    n = input_ids.shape[0]
    if n == 0:
        return torch.zeros(input_ids.shape, dtype=torch.float32, device=device)
    step = n if not chunk_size or chunk_size >= n else int(chunk_size)
    if step <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    parts = [_chunk_logprobs(model, input_ids[i:i + step], attention_mask[i:i + step]) for i in range(0, n, step)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
