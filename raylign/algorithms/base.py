"""The `Algorithm` interface: what an online method tells the engine, and nothing about Ray.

The engine owns the roles (samplers, reward, reference, Ray Train workers) and moves data:

    prompt row --prepare_prompt--> sampler --> score (+ reference log-probs) --> select (driver,
    whole batch) --> units dealt to ranks --> prepare (no-grad, every rank) --> epochs x
    minibatches of micro-batches --> loss --> optimizer step (global-weight normalised) --> sync

A method overrides only what it needs. A *unit* is the indivisible thing a loss consumes
(a prompt's group of candidates for RRHF, one rollout for PPO/GRPO/RAFT, a pair for DPO);
units are dealt to ranks whole, so a group is never split across workers.

What a method declares about its recipe (`MethodSettings`) is shared with the offline
objectives (`raylign.algorithms.objective`): its own section and config class, defaults it
changes in the shared sections, and old keys it still reads for one release. The launch layer
composes the recipe class from them (`raylign.launch.recipes`); the method never imports it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from raylign.config import StrictModel
from raylign.data.rollout import Rollout
from raylign.models.sequences import fit_pair, pack_prompt_responses, token_logprobs


class UpdateConfig(StrictModel):
    """How one rollout batch becomes optimizer steps: a method's default, which the recipe's
    `engine.trainer.epochs | num_minibatches | micro_batch_size` override (the one home of
    these settings); `TrainContext` carries the plan the trainer actually runs."""

    epochs: int = 1  # passes over each rollout batch (PPO: 2)
    num_minibatches: int = 1  # optimizer steps per epoch (every rank takes the same number)
    micro_batch_size: int = 4  # units per forward/backward


class MethodSettings:
    """What a method (online or offline) declares about its recipe."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[StrictModel] | None] = None  # the method's own section
    section: ClassVar[str] = ""  # that section's key in a recipe ("grpo", "dpo", ...)
    # more sections only this method reads (DPO's `reference`, CUT's `heldout`)
    extra_sections: ClassVar[dict[str, type[StrictModel]]] = {}
    # defaults it changes in the shared sections, as a tree ({"optim": {"lr": 5e-6}})
    recipe_defaults: ClassVar[dict] = {}
    # old key -> its new home (or None: no longer read); read for one release with a warning
    renamed_keys: ClassVar[dict[str, str | None]] = {}


class Algorithm(MethodSettings):
    """Base class: the defaults are RRHF-like (one unit per prompt group, one step per batch)."""

    needs_reference: bool = False  # the score stage attaches the reference actor's log-probs
    update: ClassVar[UpdateConfig] = UpdateConfig()

    def __init__(self, config: StrictModel | None = None, max_length: int = 768):
        self.config = config
        self.max_length = max_length

    @classmethod
    def from_recipe(cls, recipe) -> "Algorithm":
        """The algorithm a validated recipe asks for (its section, the trainer's max_length)."""
        return cls(getattr(recipe, cls.section), recipe.engine.trainer.max_length)

    # ---- driver side -------------------------------------------------------------------
    def prepare_model(self, model_path: str, output_dir: str) -> str:
        """Path of the starting weights every role loads (Quark adds its control tokens here)."""
        return model_path

    def prepare_prompt(self, row: dict) -> dict:
        """Per-row stage before sampling (e.g. a control-token prefix)."""
        return row

    def generation_prefix(self) -> list[str]:
        """Tokens the trained policy expects before every prompt (recorded in the final
        checkpoint, so `eval` and `generate` condition it as training did)."""
        return []

    def select(self, rows: list[Rollout], step: int) -> tuple[list, dict[str, float]]:
        """Batch-level work before sharding; returns the units to train on and metrics.

        Default: one unit per prompt group (keyed by `prompt_uid`, the row's identity in
        this step, so a prompt repeated within a step forms two groups).
        """
        return group_rows(rows), {}

    def state_dict(self) -> dict:
        """Driver-side state `select` carries from step to step (Quark's reward pool), as
        JSON-safe data. The driver saves it per step, so a resumed run gets it back as it
        was when the checkpoint's step was selected. Default: stateless."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` (called on the driver of a resumed run)."""

    def has_driver_state(self) -> bool:
        """Whether `state_dict` carries anything this run (the driver then saves it per step)."""
        return type(self).state_dict is not Algorithm.state_dict

    # ---- trainer side (runs on every Ray Train worker) ----------------------------------
    def build_module(self, policy: torch.nn.Module) -> torch.nn.Module:
        """The trainable module wrapped for data parallelism; must expose the policy as
        `.policy` when it is not the policy itself (PPO adds a critic)."""
        return policy

    def parameter_groups(self, module: torch.nn.Module, learning_rate: float) -> list[dict]:
        return [{"params": [p for p in module.parameters() if p.requires_grad], "lr": learning_rate}]

    def prepare(self, module: torch.nn.Module, units: list, context: "TrainContext") -> dict[str, float]:
        """No-grad pass on this rank's units before the update (old log-probs, values,
        advantages); may all-reduce batch statistics, over `units[:context.num_real_units]`
        only (a rank short of data also prepares a weight-0 filler). Returns metrics."""
        return {}

    def unit_weight(self, unit: Any) -> float:
        """What the loss sum of this unit is divided by, summed over all ranks."""
        return 1.0

    def inert(self, unit: Any) -> bool:
        """True when this unit's loss and gradient are exactly zero (a GRPO response whose
        advantage is 0 with no KL term): the trainer counts its weight and skips its
        forward and backward, the same update for less compute."""
        return False

    def loss(self, module: torch.nn.Module, units: list, context: "TrainContext") -> tuple[torch.Tensor, float, dict]:
        raise NotImplementedError

    def after_update(self, metrics: dict[str, float]) -> None:
        """Hook after each rollout batch's update (adaptive KL controller)."""

    def update_state_dict(self) -> dict:
        """Worker-side state `after_update` changes (the adaptive KL coefficient), as JSON-safe
        data; saved in the trainer's resumable checkpoint. Default: stateless."""
        return {}

    def load_update_state_dict(self, state: dict) -> None:
        """Restore `update_state_dict()` on every worker of a resumed or restarted group."""


class TrainContext:
    """What a loss needs from the trainer besides the module: padding and length limits, and the
    update plan the trainer runs (epochs x minibatches, from `engine.trainer` or the method)."""

    def __init__(self, pad_id: int, max_length: int, logprob_chunk_size: int | None = None,
                 epochs: int = 1, num_minibatches: int = 1):
        self.pad_id = pad_id
        self.max_length = max_length
        self.logprob_chunk_size = logprob_chunk_size
        self.epochs = epochs
        self.num_minibatches = num_minibatches
        self.num_real_units = 0

    @property
    def reuses_batch(self) -> bool:
        """More than one optimizer step on the same rollouts: a ratio to the rollout policy
        needs the old log-probs taken before the first of them."""
        return self.epochs > 1 or self.num_minibatches > 1


def group_rows(rows: list[dict], key: str = "prompt_uid") -> list[list[dict]]:
    """Rows grouped by `key` in first-seen order (rows without it fall back to prompt_id)."""
    groups: dict[Any, list[dict]] = {}
    for row in rows:
        groups.setdefault(row.get(key, row.get("prompt_id")), []).append(row)
    return list(groups.values())


def policy_rows(rows: list[dict]) -> list[dict]:
    """Rows the policy sampled (not the dataset's own answers)."""
    return [r for r in rows if r.get("source") != "dataset"]


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP/DeepSpeed wrapper."""
    return getattr(module, "module", module)


def policy_of(module: torch.nn.Module) -> torch.nn.Module:
    inner = unwrap(module)
    return getattr(inner, "policy", inner)


def rows_logprobs(model: torch.nn.Module, rows: list[dict], context: TrainContext):
    """Per-token log-probs of each row's response under `model` (a causal LM, possibly
    wrapped) and the packed batch: the one place rollout rows become tensors."""
    batch = pack_prompt_responses(
        [r["prompt_token_ids"] for r in rows], [r["response_token_ids"] for r in rows], context.pad_id, context.max_length
    )
    return token_logprobs(model, batch, context.logprob_chunk_size), batch


def response_token_count(row: dict, max_length: int) -> int:
    """Response tokens a row contributes after packing to `max_length` (what a token-mean
    loss divides by), without building tensors."""
    prompt, response = fit_pair(list(row["prompt_token_ids"]), list(row["response_token_ids"]), max_length)
    return len(response) - (1 if not prompt and response else 0)


def masked_list(values, mask_row) -> list[float]:
    """A row's values at its response positions, in order (the inverse of `scatter_response_values`)."""
    return values[mask_row.to(values.device).bool()].tolist()


def scatter_response_values(values: list[list[float]], response_mask: torch.Tensor) -> torch.Tensor:
    """Place per-response-token values (in order) at the mask's positions of a [N, L] tensor."""
    out = torch.zeros(response_mask.shape, dtype=torch.float32)
    mask = response_mask.bool()
    for i, row in enumerate(values):
        positions = mask[i].nonzero(as_tuple=True)[0]
        if len(row) != len(positions):
            raise ValueError(f"row {i}: {len(row)} reference values for {len(positions)} response tokens")
        out[i, positions] = torch.tensor(row, dtype=torch.float32)
    return out
