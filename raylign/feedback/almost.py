"""ALMoST synthetic comparisons: prompts from seeds, responses from ranked configurations,
preference pairs from the rubric, all generated on sampler actors (raw few-shot completion).

    PG  seed prompts --few-shot list--> new prompts (ROUGE-L < 0.5 to every known prompt),
        or the prompts of a file (`prompts.path`)
    RG  each prompt x each configuration (model, shots, demonstrations) -> one response, as a Ray
        Data job over each model's samplers, cached on disk (`raylign.feedback.almost_rg`)
    CS  the rubric (`rubric`: which axes, dominance or a priority order) -> {prompt, chosen, rejected, meta}

The rows are generic preference rows: `raylign train rm` and `load_rows(path, "preference")`
read them as they are.

    raylign synth almost --config jobs/almost_smollm2.yaml [key.sub=value ...]
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from raylign.config import InputPath, ModelName, OutputFile, RayAddress, StrictModel
from raylign.data.readers import DataError
from raylign.feedback.almost_filters import (
    ConfigRank,
    bad_prompt_reason,
    clean_generated_prompt,
    is_near_duplicate,
    make_comparisons,
    rank_configs,
)
from raylign.feedback.almost_rg import complete_cached, generate_responses, generator_fingerprint
from raylign.feedback.cache import ResponseCache
from raylign.sampling.base import SamplingConfig

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "almost"


class DemonstrationSet(StrictModel):
    path: str
    quality: float  # the rubric's order: higher is better


class PromptGenConfig(StrictModel):
    path: InputPath | None = None  # take the prompts of this file (any prompt format) instead of generating them
    num_prompts: int = 8  # prompts to generate (or to read from `path`)
    shots: int = 8  # seed prompts shown in each few-shot list
    per_round: int = 8  # few-shot lists sampled per round (one completion each)
    max_rounds: int = 6
    rouge_threshold: float = 0.5  # near-duplicate: ROUGE-L >= this with a seed or an accepted prompt
    min_words: int = 3
    max_words: int = 64


class ResponseConfig(StrictModel):
    name: str
    model: str | None = None  # default: the job's model
    size: float = 1.0  # orders models for the rubric (e.g. parameters in billions); set it when mixing models
    shots: int = Field(3, ge=0)
    demonstrations: str = "faithful"  # a key of `demonstrations`


def _default_demos() -> dict[str, DemonstrationSet]:
    return {
        "faithful": DemonstrationSet(path=str(ASSETS / "faithful_prompt.txt"), quality=2.0),
        "hhh": DemonstrationSet(path=str(ASSETS / "hhh_prompt.txt"), quality=1.0),
    }


class RubricConfig(StrictModel):
    """ALMoST's heuristic: a configuration larger, with more shots or better demonstrations writes
    the better response. `dominance` pairs two configurations when one is no worse on every axis
    of `axes` and better on one; `priority` orders them by the axes in turn (the first that
    differs decides), so every two different configurations make a pair."""

    rule: Literal["dominance", "priority"] = "dominance"
    axes: list[Literal["size", "shots", "quality"]] = Field(default_factory=lambda: ["size", "quality", "shots"],
                                                           min_length=1)


class AlmostConfig(StrictModel):
    model: ModelName = "SmolLM2-135M-Instruct"  # generates the prompts; the default for every configuration
    ray_address: RayAddress | None = None
    seeds: InputPath = str(ASSETS / "seed_prompts.txt")
    demonstrations: dict[str, DemonstrationSet] = Field(default_factory=_default_demos)
    prompts: PromptGenConfig = PromptGenConfig()
    responses: list[ResponseConfig] = [
        ResponseConfig(name="faithful_3shot", shots=3, demonstrations="faithful"),
        ResponseConfig(name="hhh_3shot", shots=3, demonstrations="hhh"),
        ResponseConfig(name="hhh_1shot", shots=1, demonstrations="hhh"),
    ]
    # raw few-shot completion; the prompts are long, the answers short
    sampling: SamplingConfig = SamplingConfig(
        prompt_mode="raw", num_samples=1, temperature=0.7, top_p=0.9, max_new_tokens=96,
        max_prompt_tokens=2048, vllm_max_model_len=2304, num_samplers=2,
    )
    rubric: RubricConfig = RubricConfig()
    min_response_words: int = 5
    length_heuristic: bool = True
    cache: bool = True  # completions cached by model, sampling settings and text (a rerun generates nothing)
    cache_dir: str | None = None  # default: ~/.cache/raylign/annotations
    rows_per_batch: int = Field(32, ge=1)  # completions per Ray Data batch
    seed: int = 0
    output: OutputFile = "runs/almost/comparisons.jsonl"


def read_seeds(path: str) -> tuple[str, list[str]]:
    """The instruction line and the seed prompts (one per line)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"seed prompts not found: {path}")
    lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith("###"):
        raise DataError(f"{path}:1: expected '### Instruction: ...' then one seed prompt per line")
    return lines[0], lines[1:]


def read_demonstrations(path: str) -> tuple[str, list[str]]:
    """The header and the dialogues of a demonstration prompt (blocks separated by '-----')."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"demonstrations not found: {path}")
    blocks = [b.strip() for b in p.read_text(encoding="utf-8").split("-----")]
    header, dialogues = blocks[0], [b for b in blocks[1:] if b]
    if not dialogues or not all(d.startswith("Human:") for d in dialogues):
        raise DataError(f"{path}: expected a header, then 'Human: ... Assistant: ...' dialogues separated by '-----'")
    return header, dialogues


def prompt_generation_text(instruction: str, examples: list[str]) -> str:
    """A numbered list of seed prompts under the instruction, open at the next number."""
    lines = [instruction] + [f"{i}. {text}" for i, text in enumerate(examples, start=1)]
    return "\n".join(lines) + f"\n{len(examples) + 1}."


def response_text(header: str, dialogues: list[str], shots: int, prompt: str) -> str:
    """`shots` demonstration dialogues, then the new prompt's open Assistant turn."""
    blocks = [header, *dialogues[:shots], f"Human:  {prompt}\n\nAssistant:"]
    return "\n\n-----\n\n".join(blocks)


def generate_prompts(samplers: list, config: AlmostConfig, rng: random.Random, cache: ResponseCache | None = None,
                     fingerprint: str = "") -> tuple[list[str], dict]:
    """PG: few-shot lists of random seeds; keep completions that are well-formed and new."""
    instruction, seeds = read_seeds(config.seeds)
    pg = config.prompts
    accepted: list[str] = []
    stats = {"candidates": 0, "near_duplicate": 0}
    for round_index in range(pg.max_rounds):
        if len(accepted) >= pg.num_prompts:
            break
        texts = [prompt_generation_text(instruction, rng.sample(seeds, min(pg.shots, len(seeds)))) for _ in range(pg.per_round)]
        for completion in complete_cached(samplers, texts, f"pg{round_index}", cache, fingerprint)[0]:
            stats["candidates"] += 1
            prompt = clean_generated_prompt(completion)
            reason = bad_prompt_reason(prompt, pg.min_words, pg.max_words)
            if reason is None and is_near_duplicate(prompt, seeds + accepted, pg.rouge_threshold):
                reason = "near_duplicate"
            if reason:
                stats[reason] = stats.get(reason, 0) + 1
            elif len(accepted) < pg.num_prompts:
                accepted.append(prompt)
        print(f"[almost] prompt generation round {round_index + 1}: {len(accepted)}/{pg.num_prompts} prompts "
              f"from {stats['candidates']} candidates", flush=True)
    stats["accepted"] = len(accepted)
    if len(accepted) < pg.num_prompts:
        rejected = ", ".join(f"{k} {v}" for k, v in stats.items() if k not in ("candidates", "accepted") and v)
        print(f"[almost] warning: {len(accepted)} of prompts.num_prompts={pg.num_prompts} after "
              f"prompts.max_rounds={pg.max_rounds} ({stats['candidates']} candidates; rejected: {rejected or 'none'}); "
              f"raise prompts.max_rounds, or give prompts.path", flush=True)
    return accepted, stats


def _ranks(config: AlmostConfig) -> list[ConfigRank]:
    names = [r.name for r in config.responses]
    if len(set(names)) != len(names):
        raise DataError(f"response configurations need distinct names, got {names}")
    for r in config.responses:
        if r.demonstrations not in config.demonstrations:
            raise DataError(f"response configuration '{r.name}': unknown demonstrations '{r.demonstrations}' "
                            f"(known: {', '.join(config.demonstrations)})")
    return [ConfigRank(r.name, r.size, r.shots, config.demonstrations[r.demonstrations].quality) for r in config.responses]


def read_prompt_file(config: AlmostConfig) -> tuple[list[str], dict]:
    """`prompts.path`: the first `num_prompts` prompts of a file (the last user turn of each)."""
    from raylign.data.adapters import iter_rows

    prompts = [row["messages"][-1]["content"] for row in iter_rows(config.prompts.path, "prompt",
                                                                  limit=config.prompts.num_prompts)]
    if not prompts:
        raise DataError(f"{config.prompts.path}: no prompts")
    return prompts, {"accepted": len(prompts), "source": str(config.prompts.path)}


def run(config: AlmostConfig) -> dict:
    """PG -> RG -> CS on sampler actors; writes the preference rows and returns a summary."""
    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray
    from raylign.sampling.actor import create_samplers

    ranks = _ranks(config)
    demos = {name: read_demonstrations(d.path) for name, d in config.demonstrations.items()}
    sampling = config.sampling.model_copy(update={"prompt_mode": "raw"})
    rng = random.Random(config.seed)
    init_ray(config.ray_address, quiet=True)
    paths = {m: str(resolve_model(m)) for m in sorted({r.model or config.model for r in config.responses} | {config.model})}
    groups = {m: create_samplers(path, sampling) for m, path in paths.items()}
    cache = ResponseCache(config.cache_dir) if config.cache else None
    fingerprints = {m: generator_fingerprint(path, sampling) for m, path in paths.items()}
    started = time.perf_counter()
    try:
        prompts, prompt_stats = (read_prompt_file(config) if config.prompts.path else
                                 generate_prompts(groups[config.model], config, rng, cache, fingerprints[config.model]))
        items = []
        for r in config.responses:
            header, dialogues = demos[r.demonstrations]
            model = r.model or config.model
            items += [{"prompt_index": i, "config": r.name, "model": model,
                       "text": response_text(header, dialogues, r.shots, p)} for i, p in enumerate(prompts)]
        generated, rg_counts = generate_responses(items, {m: list(g) for m, g in groups.items()}, fingerprints, cache,
                                                  config.rows_per_batch)
    finally:
        for group in groups.values():
            group.shutdown()
    responses = {name: [generated[name].get(i, "") for i in range(len(prompts))] for name in generated}
    print(f"[almost] {len(items)} responses ({rg_counts['cached']} from the cache) in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    rows, pair_stats = [], {}
    for i, prompt in enumerate(prompts):
        pairs, stats = make_comparisons({name: texts[i] for name, texts in responses.items()}, ranks,
                                        config.min_response_words, config.length_heuristic, config.rubric)
        for key, value in stats.items():
            pair_stats[key] = pair_stats.get(key, 0) + value
        for pair in pairs:
            meta = {"source": "almost", "chosen_config": pair["chosen_config"], "rejected_config": pair["rejected_config"]}
            rows.append({"prompt": prompt, "chosen": pair["chosen"], "rejected": pair["rejected"], "meta": meta})
    path = Path(config.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    responses_path = path.with_name(path.stem + "_responses.jsonl")
    with responses_path.open("w", encoding="utf-8") as handle:
        for i, prompt in enumerate(prompts):
            handle.write(json.dumps({"prompt": prompt, "responses": {n: t[i] for n, t in responses.items()}}, ensure_ascii=False) + "\n")
    return {
        "output": str(path), "responses_file": str(responses_path), "prompts": len(prompts), "pairs": len(rows),
        "prompt_generation": prompt_stats, "responses": rg_counts, "comparisons": pair_stats,
        "ranking": [c.name for c in rank_configs(ranks, config.rubric)],
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str]) -> int:
    from raylign.recipes import load_recipe

    config = load_recipe(argv, "synth almost", "ALMoST: synthetic prompts, ranked few-shot responses, rubric comparisons.",
                         AlmostConfig)
    summary = run(config)
    print(json.dumps(summary, indent=2))
    return 0 if summary["pairs"] else 1
