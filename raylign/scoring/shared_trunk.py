"""Ensemble members that differ only in their top blocks run their shared lower blocks once.

`train rm` ensembles train the top `top_layers` blocks and a head per member from one base model,
so every member's embeddings and lower blocks hold the same weights. Scoring a pair with each
member in full repeats that trunk k times; here it runs once and each member runs only its own
top blocks, final norm and head on the trunk's hidden states. Scores equal the members' own
(`sequence_scores`): the same positions, mask and pooling, only computed once.

Applies to decoder backbones that keep their blocks in `.layers` and a final `.norm`, and accept
`inputs_embeds` (Llama, Qwen, Mistral, ...); anything else scores member by member as before.
"""

from __future__ import annotations

import copy
import inspect
from typing import Sequence

import torch
from torch import nn

from raylign.scoring.reward_model import _parts, last_token_index, length_sorted_chunks, pad_batch


def _backbone_view(backbone: nn.Module, layers: Sequence[nn.Module], norm: nn.Module) -> nn.Module:
    """The backbone's forward over `layers` and `norm`, sharing every weight, changing nothing."""
    view = copy.copy(backbone)
    view._modules = dict(backbone._modules)
    view._modules["layers"] = nn.ModuleList(layers)
    view._modules["norm"] = norm
    return view


def _splittable(model: nn.Module) -> bool:
    backbone, head = _parts(model)
    if backbone is None or head is None or hasattr(model, "get_base_model"):
        return False
    layers = getattr(backbone, "layers", None)
    # one attention kind for every block: a top block indexes its kind from 0 in the view
    if len(set(getattr(backbone.config, "layer_types", None) or ["one"])) > 1:
        return False
    return (isinstance(layers, nn.ModuleList) and isinstance(getattr(backbone, "norm", None), nn.Module)
            and {"inputs_embeds", "position_ids"} <= set(inspect.signature(backbone.forward).parameters))


def shared_block_count(models: Sequence[nn.Module], frozen_only: bool = False) -> int:
    """How many lower blocks (with the embeddings) hold identical weights in every model; 0 when
    the models are not all splittable, differ in shape, or differ from the embeddings on.
    `frozen_only` (training): only blocks no member trains, so they stay identical."""
    if len(models) < 2 or not all(_splittable(m) for m in models):
        return 0
    backbones = [_parts(m)[0] for m in models]
    first = backbones[0]
    if any(len(b.layers) != len(first.layers) for b in backbones):
        return 0

    def same(modules: list[nn.Module]) -> bool:
        if frozen_only and any(p.requires_grad for m in modules for p in m.parameters()):
            return False
        reference = modules[0].state_dict()
        for other in modules[1:]:
            state = other.state_dict()
            if state.keys() != reference.keys() or any(
                    state[k].shape != v.shape or state[k].dtype != v.dtype or not torch.equal(state[k], v)
                    for k, v in reference.items()):
                return False
        return True

    if not same([b.embed_tokens for b in backbones]):
        return 0
    count = 0
    while count < len(first.layers) and same([b.layers[count] for b in backbones]):
        count += 1
    return count


class SharedTrunk:
    """Scores ids with k models whose first `blocks` blocks are shared: [n, k] member scores."""

    def __init__(self, models: Sequence[nn.Module], blocks: int, pad_id: int, batch_size: int = 16):
        backbones = [_parts(m)[0] for m in models]
        self.trunk = _backbone_view(backbones[0], list(backbones[0].layers[:blocks]), nn.Identity())
        self.tops = [(_backbone_view(b, list(b.layers[blocks:]), b.norm), _parts(m)[1]) for b, m in zip(backbones, models)]
        self.pad_id, self.batch_size = pad_id, batch_size

    def scores(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[batch, k] float32 scores of one padded batch; gradients reach the members' own top
        blocks and heads (the trunk is frozen, so it runs without building a graph)."""
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            trunk = self.trunk(input_ids=ids, attention_mask=mask, position_ids=positions,
                               use_cache=False).last_hidden_state
        rows, last = torch.arange(ids.shape[0]), last_token_index(mask)
        columns = []
        for top, head in self.tops:
            hidden = top(inputs_embeds=trunk, attention_mask=mask, position_ids=positions, use_cache=False).last_hidden_state
            columns.append(head(hidden[rows, last].to(head.weight.dtype))[:, 0].float())
        return torch.stack(columns, dim=1)

    def member_scores(self, sequences: list[list[int]]) -> torch.Tensor:
        out = torch.empty(len(sequences), len(self.tops), dtype=torch.float64)
        with torch.inference_mode():
            for chunk in length_sorted_chunks(sequences, self.batch_size):
                out[chunk] = self.scores(*pad_batch([sequences[i] for i in chunk], self.pad_id)).double()
        return out
