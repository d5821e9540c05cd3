"""Choose what a model trains: all weights, the top N blocks, or LoRA adapters (every trainer).

A scalar head (reward models) is always trained. Freezing the bottom of the network also means
backward stops at the first trainable block, which is what makes a 135M model
trainable on two CPU cores.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from raylign.config import StrictModel


class LoraSettings(StrictModel):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    top_layers: int | None = None  # adapt only the top N blocks (None: all)


class TrainableSettings(StrictModel):
    """What a trainer trains, named the same in both trainers."""

    # every weight, the top `top_layers` blocks (+ final norm, + a head), or LoRA adapters; the
    # last two fit a 135M+ model on a laptop CPU (backward stops at the first trainable block)
    trainable: Literal["all", "top_layers", "lora"] = "all"
    top_layers: int = Field(2, ge=0)
    lora: LoraSettings = LoraSettings()


def block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The transformer blocks: the longest nn.ModuleList in the model (layers, h, layer...)."""
    best_name, best = "", None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best)):
            best_name, best = name, module
    if best is None:
        raise ValueError(f"{type(model).__name__}: cannot find its list of transformer blocks")
    return best_name, best


def head_names(model: nn.Module) -> list[str]:
    return [name for name in ("score", "classifier") if isinstance(getattr(model, name, None), nn.Module)]


def freeze_to_top_layers(model: nn.Module, top_layers: int) -> list[str]:
    """Train the head, the top `top_layers` blocks and the non-embedding parameters outside
    the blocks (final norm); freeze the rest. Returns the trainable parameter names."""
    blocks_name, blocks = block_list(model)
    count = len(blocks)
    if not 0 <= top_layers <= count:
        raise ValueError(f"top_layers={top_layers} but the model has {count} blocks")
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    trainable_prefixes = tuple(f"{blocks_name}.{i}." for i in range(count - top_layers, count))
    heads = tuple(f"{h}." for h in head_names(model))
    names = []
    for name, param in model.named_parameters():
        in_blocks = name.startswith(blocks_name + ".")
        train = (
            name.startswith(heads)
            or name.startswith(trainable_prefixes)
            or (not in_blocks and id(param) not in embedding_params)
        )
        param.requires_grad_(train)
        if train:
            names.append(name)
    return names


def apply_lora(model: nn.Module, settings: LoraSettings, task: str = "SEQ_CLS") -> nn.Module:
    """Wrap in peft LoRA (task SEQ_CLS or CAUSAL_LM); a scalar head is trained in full (modules_to_save)."""
    from peft import LoraConfig, TaskType, get_peft_model

    _, blocks = block_list(model)
    layers, targets = None, settings.target_modules
    if settings.top_layers is not None:
        layers = list(range(len(blocks) - settings.top_layers, len(blocks)))
        if isinstance(targets, str):
            # peft takes a layer subset only with explicit module names: every Linear in a block.
            targets = sorted({name.rsplit(".", 1)[-1] for name, m in blocks[0].named_modules() if isinstance(m, nn.Linear)})
    config = LoraConfig(
        task_type=getattr(TaskType, task),
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        layers_to_transform=layers,
        modules_to_save=head_names(model) or None,
    )
    return get_peft_model(model, config)


def make_trainable(model: nn.Module, trainable: str, top_layers: int, lora: LoraSettings,
                   lora_task: str = "SEQ_CLS") -> nn.Module:
    """The model with only what `trainable` names left trainable; a model made of `members`
    (a reward-model ensemble) gets the same treatment member by member."""
    if isinstance(getattr(model, "members", None), nn.ModuleList):
        model.members = nn.ModuleList([make_trainable(m, trainable, top_layers, lora, lora_task) for m in model.members])
        return model
    if trainable == "all":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    if trainable == "top_layers":
        freeze_to_top_layers(model, top_layers)
        return model
    if trainable == "lora":
        return apply_lora(model, lora, lora_task)
    raise ValueError(f"unknown trainable '{trainable}' (all, top_layers, lora)")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trained, total
