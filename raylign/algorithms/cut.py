"""CUT: contrastive unlikelihood training with judgments (Xu et al., 2023).

A judged response y to instruction x gives three contrasts (ALGORITHMS.md, section CUT):

- Align-P  (a response judged acceptable): likelihood of y given the plain prompt;
- Align-N  (a response with a judgment): likelihood of y given prompt + judgment, so the
  judgment "explains" the response's faults;
- Misalign (the same judged response, plain prompt): token-level unlikelihood. A token is
  flagged as inappropriate when the judgment makes it more likely,
  P(y_t | judgment prompt) / P(y_t | plain prompt) > threshold (ratio detached), and gets
  weight_unlike * -log(1 - p_t); unflagged tokens keep the ordinary -log p_t.

The loss is a pure function of response-aligned tensors [N, R] (column j is the j-th response
token in both encodings), tested against hand-computed values. `raylign train cut` runs it on
the offline trainer, with LoRA by default (the paper's setting); the encodings and Ray Data
stages are in `cut_data.py`, the held-out before/after report in `raylign.evaluation.cut_eval`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from raylign.algorithms.core import aggregate
from raylign.algorithms.cut_data import (
    CUTExample,
    EncodeJudgments,
    TagRows,
    aligned_logprobs,
    downsample_dataset,
    pack_examples,
)
from raylign.algorithms.objective import OfflineObjective
from raylign.config import StrictModel
from raylign.models.sequences import token_logprobs

Kind = Literal["align_p", "align_n", "misalign"]
KINDS = ("align_p", "align_n", "misalign")

# The judgment prompt follows the paper's Alpaca "prompt_no_input_judge" template, put inside
# the model's chat template as the user turn. {prompt} is the instruction (+ input).
JUDGMENT_TEMPLATE = (
    "Write a response to the instruction below; the response should match the corresponding judgment.\n\n"
    "### Instruction:\n{prompt}\n\n### Judgment:\n{judgment}"
)


class CUTConfig(StrictModel):
    """The CUT section of a recipe (LoRA and the optimizer are the offline trainer's settings)."""

    threshold: float = 1.1  # flag a token when P(judged) / P(plain) exceeds this (1.1 - 1.2)
    weight_unlike: float = 1.0  # weight of -log(1 - p) on flagged tokens (0.5 - 1)
    # weight of Align-N beside Misalign in a negative example (the paper: 1). Below 1 the
    # judged response's own tokens are raised less, flagged ones included (docs/cut.md)
    weight_align_n: float = Field(1.0, ge=0.0)
    downsample: float | None = 0.25  # positives kept = downsample * #negatives; None keeps all
    judgment_template: str = JUDGMENT_TEMPLATE
    seed: int = 0  # positive downsampling
    max_response_tokens: int = 256  # responses are cut here (EOS kept), then each prompt fills the rest


def log1mexp(logp: Tensor, eps: float = 1e-5) -> Tensor:
    """log(1 - exp(logp)) for logp <= 0, stably; p is clamped to 1 - eps so a token the model
    is certain of costs -log(eps) instead of infinity (the reference adds 1e-5 likewise)."""
    logp = logp.clamp(max=math.log1p(-eps))
    # expm1 is accurate near p = 1 (logp near 0), log1p(-exp) near p = 0.
    return torch.where(logp > -math.log(2.0), torch.log(-torch.expm1(logp)), torch.log1p(-torch.exp(logp)))


def flag_tokens(logprobs_plain: Tensor, logprobs_judged: Tensor, mask: Tensor, threshold: float) -> Tensor:
    """True where P(y_t | judgment prompt) / P(y_t | plain prompt) > threshold (no gradient)."""
    with torch.no_grad():
        log_ratio = logprobs_judged.detach() - logprobs_plain.detach()
        return (log_ratio > math.log(threshold)) & mask.bool()


def cut_token_terms(logprobs_plain: Tensor, logprobs_judged: Tensor, mask: Tensor, kind: str,
                    threshold: float = 1.1, weight_unlike: float = 1.0) -> tuple[Tensor, Tensor]:
    """Per-token losses [N, R] of one contrast (0 outside `mask`) and the flagged tokens.

    `torch.where`, not a product, so inf/NaN in padded positions reaches neither the value
    nor the gradient.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown CUT contrast '{kind}' (choose from {', '.join(KINDS)})")
    if logprobs_plain.shape != mask.shape or logprobs_judged.shape != mask.shape:
        raise ValueError(f"logprobs {tuple(logprobs_plain.shape)} / {tuple(logprobs_judged.shape)} and mask "
                         f"{tuple(mask.shape)} must have the same shape")
    mask = mask.bool()
    zeros = torch.zeros_like(logprobs_plain)
    safe_plain = torch.where(mask, logprobs_plain, zeros)
    flagged = torch.zeros_like(mask)
    if kind == "align_p":
        token_loss = -safe_plain
    elif kind == "align_n":
        token_loss = -torch.where(mask, logprobs_judged, zeros)
    else:
        flagged = flag_tokens(safe_plain, torch.where(mask, logprobs_judged, zeros), mask, threshold)
        token_loss = torch.where(flagged, -weight_unlike * log1mexp(safe_plain), -safe_plain)
    return torch.where(mask, token_loss, zeros), flagged


def cut_token_loss(logprobs_plain: Tensor, logprobs_judged: Tensor, mask: Tensor, kind: str,
                   threshold: float = 1.1, weight_unlike: float = 1.0,
                   normalize: Literal["sequence", "token"] = "sequence") -> tuple[Tensor, float, dict[str, float]]:
    """One contrast over a batch -> (loss_sum, weight, metrics).

    normalize="sequence": loss_sum is the sum over rows of each row's mean token loss and
    weight the number of non-empty rows (the paper trains one example per micro-batch, so
    every example weighs the same); "token": the sum of token losses over token count.
    """
    token_loss, flagged = cut_token_terms(logprobs_plain, logprobs_judged, mask, kind, threshold, weight_unlike)
    loss_sum, weight = aggregate(token_loss, mask, normalize)
    lengths = mask.bool().sum(-1)
    tokens = float(lengths.sum())
    metrics = {f"{kind}_loss": float(loss_sum.detach()) / weight if weight else float("nan")}
    if kind == "misalign":
        metrics["flagged_fraction"] = float(flagged.sum()) / tokens if tokens else float("nan")
    return loss_sum, weight, metrics


def cut_loss(logprobs_plain: Tensor, logprobs_judged: Tensor, mask: Tensor, negative: Tensor,
             threshold: float = 1.1, weight_unlike: float = 1.0,
             weight_align_n: float = 1.0) -> tuple[Tensor, float, dict[str, float]]:
    """A mixed batch of examples -> (loss_sum, weight = #examples, metrics).

    Each example weighs 1, as in the reference (one example per micro-batch): a positive
    contributes its mean Align-P NLL; a negative (weight_align_n * Align-N + Misalign) / 2,
    each a mean over its tokens. `logprobs_judged` rows of positives are ignored (any values).
    """
    negative = negative.bool().to(mask.device)
    mask = mask.bool()
    lengths = mask.sum(-1).clamp(min=1).to(logprobs_plain.dtype)
    align_p, _ = cut_token_terms(logprobs_plain, logprobs_judged, mask, "align_p")
    align_n, _ = cut_token_terms(logprobs_plain, logprobs_judged, mask & negative[:, None], "align_n")
    misalign, flagged = cut_token_terms(logprobs_plain, logprobs_judged, mask & negative[:, None], "misalign",
                                        threshold, weight_unlike)
    p_mean, n_mean, m_mean = (t.sum(-1) / lengths for t in (align_p, align_n, misalign))
    per_example = torch.where(negative, 0.5 * (weight_align_n * n_mean + m_mean), p_mean)
    rows = mask.any(-1)
    loss_sum = per_example[rows].sum()
    pos, neg = rows & ~negative, rows & negative
    neg_tokens = float(mask[neg].sum())

    def mean_of(values: Tensor, which: Tensor) -> float:
        return float(values.detach()[which].mean()) if bool(which.any()) else float("nan")

    metrics = {
        "align_p_nll": mean_of(p_mean, pos),
        "align_n_nll": mean_of(n_mean, neg),
        "misalign_loss": mean_of(m_mean, neg),
        "flagged_fraction": float(flagged.sum()) / neg_tokens if neg_tokens else float("nan"),
        "negatives": float(neg.sum()),
    }
    return loss_sum, float(rows.sum()), metrics


class HeldoutConfig(StrictModel):
    """The before/after figures on held-out judgments (`raylign.evaluation.cut_eval`)."""

    path: str | None = None  # default: data.test_path
    negatives: int = 64  # judged responses whose judged-bad tokens are followed
    positives: int = 64  # acceptable responses for the fluency figure (their NLL)
    batch_size: int = 8


class CUTObjective(OfflineObjective):
    name = "cut"
    config_class = CUTConfig
    section = "cut"
    extra_sections = {"heldout": HeldoutConfig}
    # the paper: LoRA r 16, alpha 16, dropout 0.05 on the MLP projections, lr 4e-4, cosine
    recipe_defaults = {"data": {"format": "cut", "max_length": 384},
                       "trainable": "lora", "optim": {"lr": 4e-4, "schedule": "cosine"},
                       "lora": {"r": 16, "alpha": 16, "dropout": 0.05,
                                "target_modules": ["gate_proj", "up_proj", "down_proj"]}}
    row_kind = "judgment"
    unit = "judgments"
    lora_task = "CAUSAL_LM"
    select_metric = "loss"
    select_mode = "min"

    def prepare_dataset(self, ds, model_path: str):
        cut = self.config.cut
        tagged = ds.map_batches(TagRows(cut.seed), batch_format="pyarrow", batch_size=256).materialize()
        kept = downsample_dataset(tagged, cut.downsample)
        return kept.map_batches(EncodeJudgments(model_path, cut, self.config.data.max_length),
                                batch_format="pyarrow", batch_size=64)

    def collate(self, rows: list[dict]) -> dict:
        examples = [CUTExample("", bool(r["negative"]), list(r["plain_prompt"]),
                               list(r["judged_prompt"]) if r["negative"] else None, list(r["response"]))
                    for r in rows]
        return pack_examples(examples, self.pad_id)

    def loss(self, module, data: dict) -> tuple[torch.Tensor, float, dict]:
        logprobs = token_logprobs(module, data["batch"])
        plain, judged, mask = aligned_logprobs(logprobs, data)
        cut = self.config.cut
        return cut_loss(plain, judged, mask, data["negative"], cut.threshold, cut.weight_unlike,
                        cut.weight_align_n)
