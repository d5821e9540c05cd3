"""Seeded 2-step runs of every method on the tiny model, driven through `raylign train <name>`
with recipe files, so they pin behaviour across refactors (TRL's tests/invariant idea).

`golden.json` holds the per-step metrics these runs gave before the registry refactor; the
test reruns them and compares. Recipes here use the keys of that time on purpose: the old
keys must keep working (with a deprecation line) for one release.

Record again (only when a change of behaviour is intended, and say so in the commit):
    RAYLIGN_RECORD_GOLDEN=1 .venv/bin/python -m pytest tests/invariant -x
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUNDLED_HH = REPO / "raylign" / "assets" / "hh_rlhf_harmless_sample.jsonl.gz"
GOLDEN = Path(__file__).with_name("golden.json")

# Timings, throughput, versions and counters of the machine, not of the method.
VOLATILE = ("seconds", "_per_s", "elapsed", "time", "buffer_pending", "sampler_retries", "lr")

INSTRUCTIONS = ["Name a colour.", "Say hello.", "Write a poem about the sea.", "What is the capital of France?",
                "Tell me a joke.", "Count to three.", "Describe a dog.", "Give me a recipe."]
OUTPUTS = ["Blue.", "Hello there!", "The sea is wide and the wind is free.", "The capital of France is Paris.",
           "Why did the fox jump? To get over the lazy dog.", "One, two, three.", "A dog is a loyal friend.",
           "Mix flour, water, salt and yeast, then bake."]


def online_recipe(model: str, out: Path, method: dict) -> dict:
    recipe = {
        "model": model,
        "data": {"path": str(BUNDLED_HH), "limit": 8},
        "sampling": {"backend": "hf", "num_samples": 4, "max_new_tokens": 8, "num_samplers": 1, "temperature": 1.0,
                     "max_prompt_tokens": 40, "seed": 0},
        "reward": {"kind": "function", "function": "raylign.scoring.rule_rewards:concise"},
        "reference": {"num_cpus": 0.1},
        "engine": {"num_iterations": 2, "prompts_per_step": 2, "pipeline": "sequential", "output_dir": str(out),
                   "trainer": {"num_workers": 1, "cpus_per_worker": 0.5, "learning_rate": 5e-3, "max_length": 64,
                               "seed": 0}},
    }
    for key, value in method.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    return recipe


# name -> (command words, method part of the recipe laid over the shared part)
ONLINE = {
    "rrhf": (["train", "rrhf"], {"reference": {"num_cpus": 0.1, "kl_coef": 0.05}}),
    "ppo": (["train", "ppo"], {"ppo": {"ppo_epochs": 2, "kl_coef": 0.05}}),
    "grpo": (["train", "grpo"], {"grpo": {"kl_coef": 0.05, "epochs": 2}}),
    "raft": (["train", "raft"], {"raft": {"mode": "top", "top_fraction": 0.5, "min_response_tokens": 1,
                                          "reject_markers": []}}),
    "online_dpo": (["train", "online-dpo"], {"dpo": {"beta": 0.5}}),
    "quark": (["train", "quark"], {"quark": {"num_quantiles": 2, "pool_size": 16}}),
}


def offline_common(model: str, out: Path) -> dict:
    return {"model": model, "output_dir": str(out), "trainable": "all", "num_workers": 1, "cpus_per_worker": 1,
            "batch_size": 4, "log_every": 1, "warmup_ratio": 0.0, "schedule": "constant", "eval_every": 0,
            "keep_best": False, "max_steps": 2, "lr": 2e-3, "seed": 0}


def write_offline_data(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    alpaca = folder / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": i, "input": "", "output": o} for i, o in zip(INSTRUCTIONS, OUTPUTS)]))
    judgments = folder / "judgments.jsonl"
    with judgments.open("w") as handle:
        for n, (instruction, output) in enumerate(zip(INSTRUCTIONS, OUTPUTS)):
            judgment = None if n % 2 else "The response is too short and misses the point."
            handle.write(json.dumps({"instruction": instruction, "input": "", "output": output,
                                     "judgment": judgment}) + "\n")
    return {"alpaca": alpaca, "judgments": judgments}


def offline_recipes(model: str, tmp: Path) -> dict[str, tuple[list[str], dict]]:
    files = write_offline_data(tmp / "data")
    pairs = {"path": str(BUNDLED_HH), "limit": 16, "max_length": 64, "test_fraction": 0.0, "validation_fraction": 0.0}
    return {
        "rm": (["train", "rm"], {**offline_common(model, tmp / "rm"), "data": pairs}),
        "sft": (["train", "sft"], {**offline_common(model, tmp / "sft"),
                                   "data": {"path": str(files["alpaca"]), "format": "alpaca", "max_length": 64,
                                            "test_fraction": 0.0, "validation_fraction": 0.0}}),
        "dpo": (["train", "dpo"], {**offline_common(model, tmp / "dpo"), "data": pairs, "dpo": {"beta": 0.5},
                                   "reference": {"num_cpus": 0.5, "threads": 1}}),
        "rrhf-offline": (["train", "rrhf-offline"], {**offline_common(model, tmp / "rrhf-offline"),
                                                     "data": {**pairs, "format": "hh"}}),
        "cut": (["train", "cut"], {**offline_common(model, tmp / "cut"), "trainable": "lora",
                                   "data": {"path": str(files["judgments"]), "format": "cut", "max_length": 64,
                                            "test_fraction": 0.0, "validation_fraction": 0.0},
                                   "cut": {"downsample": None}}),
    }


def stable_metrics(row: dict) -> dict[str, float]:
    return {k: float(v) for k, v in sorted(row.items())
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not any(t in k for t in VOLATILE)}


def read_steps(metrics_file: Path, offline: bool) -> list[dict[str, float]]:
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    if offline:
        rows = [r for r in rows if r.get("split") == "train"]
    return [stable_metrics(r) for r in rows]


def run_recipe_file(words: list[str], recipe: dict, folder: Path, overrides: list[str] = ()) -> int:
    import yaml

    from raylign.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return main([*words, "--config", str(path), *overrides])
