"""`raylign generate best-of-n` and `raylign generate outputs`: batch inference to AlpacaEval outputs.

    raylign generate best-of-n --config jobs/best_of_n_alpaca.yaml [key.sub=value ...]
    raylign generate outputs --config jobs/best_of_n_alpaca.yaml output=runs/sft/outputs.json
    raylign generate samples --config jobs/best_of_n_alpaca.yaml output=runs/study/samples.json
"""

from __future__ import annotations

import json

from raylign.generation.best_of_n import BestOfNConfig, run

_TEXTS = {
    "best-of-n": "Sample n responses per prompt, score them with a reward source, keep the argmax (AlpacaEval outputs).",
    "outputs": "One response per prompt (n = 1, no reward): a model's AlpacaEval outputs.",
    "samples": "n responses per prompt, no reward, as AlpacaFarm multi-sample lists (input to `raylign annotate`).",
}


def _main(argv: list[str], name: str) -> int:
    from raylign.recipes import load_recipe

    config = load_recipe(argv, f"generate {name}", _TEXTS[name], BestOfNConfig)
    summary = run(config, best_of_n=name == "best-of-n", samples=name == "samples")
    print(json.dumps(summary, indent=2))
    return 0 if summary["outputs"] else 1


def best_of_n(argv: list[str]) -> int:
    return _main(argv, "best-of-n")


def outputs(argv: list[str]) -> int:
    return _main(argv, "outputs")


def samples(argv: list[str]) -> int:
    return _main(argv, "samples")
