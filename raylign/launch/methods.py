"""The method registry: every `raylign train <name>`, one line each.

A method is one module under `raylign/algorithms/` (an `Algorithm` for the online engine or an
`OfflineObjective` for the offline trainer, each declaring its own recipe section) plus one
line here. Everything that lists methods reads this table: the `raylign train <name>` commands
and `raylign --help`, recipe validation (`launch.recipes.recipe_class_for`), the README's
method table check and the tests parametrized over methods. See docs/adding_a_method.md.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

ONLINE, OFFLINE = "online", "offline"


@dataclass(frozen=True)
class Method:
    name: str  # `raylign train <name>`
    family: str  # ONLINE: the sampler -> scorer -> trainer engine; OFFLINE: Ray Train over Ray Data
    target: str  # "module:Class", the Algorithm or OfflineObjective
    help: str  # one line for `raylign --help`
    recipe: str  # the shipped recipe under jobs/
    recipe_prefixes: tuple[str, ...] = ()  # other jobs/ file prefixes its recipe class validates
    after: str | None = None  # "module:function(recipe, summary) -> summary", run after an offline training

    def load(self) -> type:
        """The method's class (imported now: `--help` never imports torch)."""
        module, name = self.target.split(":")
        cls = getattr(importlib.import_module(module), name)
        if cls.name != self.name:
            raise TypeError(f"{self.target} is named '{cls.name}' but registered as '{self.name}'")
        return cls

    def prefixes(self) -> tuple[str, ...]:
        return (self.name.replace("-", "_"), *self.recipe_prefixes)


METHODS: tuple[Method, ...] = (
    Method("rrhf", ONLINE, "raylign.algorithms.rrhf:RRHFAlgorithm",
           "RRHF: rank k sampled responses by reward; ranking + SFT loss", "jobs/rrhf_hh.yaml"),
    Method("ppo", ONLINE, "raylign.algorithms.ppo:PPOAlgorithm",
           "PPO: policy, reference, reward and value models; GAE, clipped losses", "jobs/ppo_hh.yaml"),
    Method("grpo", ONLINE, "raylign.algorithms.grpo:GRPOAlgorithm",
           "GRPO and its variants (RLOO, Dr GRPO, DAPO, GSPO, REINFORCE++, TIS): group baselines, no critic", "jobs/grpo_hh.yaml",
           recipe_prefixes=("rloo", "dr_grpo")),
    Method("raft", ONLINE, "raylign.algorithms.raft:RAFTAlgorithm",
           "RAFT / expert iteration: sample K, keep the best, fine-tune", "jobs/raft_hh.yaml"),
    Method("online-dpo", ONLINE, "raylign.algorithms.online_dpo:OnlineDPOAlgorithm",
           "online DPO on best-vs-worst sampled pairs", "jobs/online_dpo_hh.yaml"),
    Method("quark", ONLINE, "raylign.algorithms.quark:QuarkAlgorithm",
           "Quark: reward-quantile control tokens, conditioned LM loss + KL", "jobs/quark_hh.yaml"),
    Method("rm", OFFLINE, "raylign.algorithms.reward_model:RewardModelObjective",
           "a pairwise (Bradley-Terry) reward model", "jobs/rm_hh.yaml",
           after="raylign.algorithms.reward_model:export_after_training"),
    Method("sft", OFFLINE, "raylign.algorithms.sft:SFTObjective",
           "supervised fine-tuning on demonstrations", "jobs/sft_alpaca.yaml"),
    Method("dpo", OFFLINE, "raylign.algorithms.dpo:DPOObjective",
           "DPO / IPO / conservative DPO on preference pairs", "jobs/dpo_hh.yaml"),
    Method("rrhf-offline", OFFLINE, "raylign.algorithms.rrhf_offline:RRHFOfflineObjective",
           "RRHF from ranked files ({query, responses, scores}): ranking + SFT loss", "jobs/rrhf_offline_hh.yaml"),
    Method("cut", OFFLINE, "raylign.algorithms.cut:CUTObjective",
           "CUT: contrastive unlikelihood on judgments, LoRA", "jobs/cut_judgments.yaml",
           after="raylign.evaluation.cut_eval:after_training"),
)


def get_method(name: str) -> Method:
    for method in METHODS:
        if method.name == name:
            return method
    raise KeyError(f"unknown method '{name}' (choose from {', '.join(m.name for m in METHODS)})")


def method_for_recipe(path: str | Path) -> Method | None:
    """The method whose recipe class validates a jobs/ file, by its name's longest matching
    prefix (`rrhf_offline_hh` is rrhf-offline's, not rrhf's)."""
    stem = Path(path).stem
    matches = [(len(prefix), method) for method in METHODS for prefix in method.prefixes()
               if stem == prefix or stem.startswith(prefix + "_")]
    return max(matches, key=lambda m: m[0])[1] if matches else None
