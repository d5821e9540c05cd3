"""What many tests share, once: prompt rows, small rewards the tiny model can move, a free port,
greedy log-probs to compare a sampler's weights with, and the online methods as tests run them.

Ray workers unpickle the rewards defined here, so this module is pickled by value."""

from __future__ import annotations

import socket
import sys

import torch
from ray import cloudpickle

from raylign.scoring.base import RewardSource

cloudpickle.register_pickle_by_value(sys.modules[__name__])

TEXTS = ["capital of France?", "write a poem", "hello", "tell me a joke"]
MAX_LENGTH = 64  # prompt + response tokens in the tests' online runs


def prompt_rows(texts: list[str] = TEXTS, answers: bool = False) -> list[dict]:
    """Canonical prompt rows; with `answers`, HH-style chosen/rejected ones (RRHF ranks them too)."""
    extra = {"chosen": "Paris is the capital.", "rejected": "I cannot help."} if answers else {}
    return [{"prompt_id": f"p{i}", "prompt": text, "messages": [{"role": "user", "content": text}], **extra}
            for i, text in enumerate(texts)]


PROMPTS = prompt_rows()


class PreferLength(RewardSource):
    """Responses close to `target` tokens score best (a reward the tiny model can move);
    `per_char` breaks ties by text length."""

    def __init__(self, target: int = 6, per_char: float = 0.0):
        self.target, self.per_char = target, per_char

    def score(self, rows):
        return [-abs(len(r["response_token_ids"]) - self.target) + self.per_char * len(r["response"]) for r in rows]


class PreferShort(RewardSource):
    """The shorter the response, the better."""

    def score(self, rows):
        return [-float(len(r["response_token_ids"])) for r in rows]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def greedy_logprobs(model, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
    """log p(response token | everything before it) under `model`, one float per token."""
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(ids).logits.float().log_softmax(-1)[0]
    return [logits[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(response_ids)]


# case -> (registry method, the method's part of a test recipe): every online method as the
# CPU and GPU tests run it on the tiny model
ONLINE_CASES: dict[str, tuple[str, dict]] = {
    "ppo": ("ppo", {"ppo": {"kl_coef": 0.05}, "engine": {"trainer": {"epochs": 2}}}),
    "ppo_separate_critic": ("ppo", {"ppo": {"value_model": "separate", "adaptive_kl": True, "kl_horizon": 100},
                                    "engine": {"trainer": {"epochs": 1}}}),
    "grpo": ("grpo", {"grpo": {"kl_coef": 0.05}, "engine": {"trainer": {"epochs": 2}}}),
    "rloo": ("grpo", {"grpo": {"estimator": "rloo"}}),
    "raft": ("raft", {"raft": {"mode": "top", "top_fraction": 0.5, "min_response_tokens": 1, "reject_markers": []}}),
    "online_dpo": ("online-dpo", {"dpo": {"beta": 0.5}}),
    "quark": ("quark", {"quark": {"num_quantiles": 2, "pool_size": 16}}),
}


def online_case(case: str, trainer: dict | None = None):
    """(algorithm, recipe) of a test case, built through the registry as `raylign train` builds
    them; `trainer` settings are laid over the case's `engine.trainer`."""
    from raylign.config import config_from_tree, deep_merge
    from raylign.launch.methods import get_method
    from raylign.launch.recipes import recipe_class

    method, tree = ONLINE_CASES[case]
    tree = deep_merge({"engine": {"trainer": {"max_length": MAX_LENGTH}}}, tree)
    tree = deep_merge(tree, {"engine": {"trainer": trainer or {}}})
    recipe = config_from_tree(recipe_class(method), tree, f"test case {case}")
    return get_method(method).load().from_recipe(recipe), recipe


def method_recipe(name: str, tree: dict | None = None):
    """Method `name`'s recipe (its registered class) from a tree of settings, as a file gives it."""
    from raylign.config import config_from_tree
    from raylign.launch.recipes import recipe_class

    return config_from_tree(recipe_class(name), tree or {}, f"test recipe {name}")


def train_offline(name: str, recipe) -> dict:
    """`raylign train <offline method>` on an already built recipe: train, then the method's after-step."""
    from raylign.launch.methods import get_method
    from raylign.launch.offline import run_method

    method = get_method(name)
    return run_method(recipe, method.load()(recipe), method)
