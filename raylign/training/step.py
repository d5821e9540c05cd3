"""One optimizer step over micro-batches: the training-step core every trainer shares.

The online engine (PPO, GRPO, RRHF, ...) and the offline trainer (RM, SFT, DPO, CUT) both
take a step the same way, because the subtle parts are the same:

- the loss is normalised by the **global** weight (tokens, pairs or groups summed over all
  ranks), not by each rank's own count, so uneven shards weigh every example equally;
- every rank runs the **same number of micro-steps** (DDP and ZeRO-2 collectives run per
  backward); a rank short of data repeats a micro-batch at weight 0, so nothing trains twice;
- DDP gradients are synchronised only on the last micro-step (`no_sync` before it), and
  DeepSpeed is told which backward closes the accumulation window.

A loss function takes (model, micro_batch.data) and returns (loss_sum, weight, metrics).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch

from raylign.collectives import all_reduce, weighted_metrics, world_size

LossFn = Callable[[torch.nn.Module, Any], tuple]


@dataclass
class MicroBatch:
    """One forward/backward worth of data and the weight its loss sum is divided by."""

    data: Any
    weight: float


def _no_sync(model, last: bool, deepspeed: bool):
    if deepspeed or last or not hasattr(model, "no_sync"):
        return nullcontext()
    return model.no_sync()


def optimizer_step(
    model,
    optimizer,
    micro_batches: list[MicroBatch],
    loss_fn: LossFn,
    *,
    deepspeed: bool = False,
    max_grad_norm: float | None = 1.0,
    scheduler=None,
    filler: MicroBatch | None = None,
    params: list[torch.nn.Parameter] | None = None,
) -> dict[str, float]:
    """Accumulate gradients over `micro_batches` (this rank's share) and take one step.

    `filler` is run at weight 0 by a rank that has no micro-batch of its own, so it still
    joins every collective. Returns the step's metrics, identical on every rank: the
    global loss (sum of loss sums / global weight), the weighted means of the loss's
    metrics, the gradient norm, the global weight and the micro-steps run per rank.
    """
    local_weight = sum(mb.weight for mb in micro_batches)
    global_weight = all_reduce([local_weight])[0]
    steps = int(all_reduce([len(micro_batches)], op="max")[0])
    if steps == 0 or global_weight <= 0:
        return {"skipped_steps": 1.0, "global_weight": global_weight}
    if not micro_batches and filler is None:
        raise ValueError("this rank has no micro-batch and no filler: it cannot join the step's collectives")
    scale = world_size() / global_weight  # DDP and DeepSpeed average gradients over ranks
    loss_total = 0.0
    collected: list[tuple[float, dict]] = []
    if not deepspeed:
        optimizer.zero_grad(set_to_none=True)
    for index in range(steps):
        own = index < len(micro_batches)
        micro = micro_batches[index] if own else (micro_batches[index % len(micro_batches)] if micro_batches else filler)
        factor = scale if own else 0.0
        last = index == steps - 1
        if deepspeed:
            model.set_gradient_accumulation_boundary(last)
        with _no_sync(model, last, deepspeed):
            loss_sum, _, metrics = loss_fn(model, micro.data)
            scaled = loss_sum * factor
            if deepspeed:
                model.backward(scaled, scale_wrt_gas=False)
            else:
                scaled.backward()
        if own:
            loss_total += float(loss_sum.detach())
            collected.append((micro.weight, metrics))
    if deepspeed:
        model.step()
        grad_norm = float(model.get_global_grad_norm() or 0.0)
    else:
        trainable = params if params is not None else [p for p in model.parameters() if p.requires_grad]
        norm = torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm if max_grad_norm else float("inf"))
        grad_norm = float(norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    out = weighted_metrics(collected)
    out["loss"] = all_reduce([loss_total])[0] / global_weight
    out["grad_norm"] = grad_norm
    out["global_weight"] = global_weight
    out["micro_steps"] = float(steps)
    return out


def deal(items: list, rank: int, world: int) -> list:
    """Round-robin share of `items` for `rank` (possibly empty: see `filler`)."""
    return list(items[rank::world])


def split_even(items: list, parts: int) -> list[list]:
    """`items` cut into `parts` contiguous chunks whose sizes differ by at most one."""
    parts = max(1, parts)
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def chunked(items: list, size: int) -> list[list]:
    size = max(1, int(size))
    return [items[i : i + size] for i in range(0, len(items), size)]
