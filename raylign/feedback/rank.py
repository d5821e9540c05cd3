"""`raylign annotate rank`: ranked files for offline RRHF, from any mix of response sources, as a Ray Data job.

    raylign generate samples --config jobs/best_of_n_alpaca.yaml output=runs/rank/samples.json
    raylign annotate rank --prompts ../shared/data/hh_rlhf_harmless.jsonl.gz --split train --limit 300 \
        --samples runs/rank/samples.json --dataset-responses --annotator rm:hh-rm-smollm2 \
        --output runs/rank/ranked.jsonl

Per prompt, the candidates are: each `--samples` file's responses to it (AlpacaFarm
multi-sample lists from `raylign generate samples`, or any system's AlpacaEval outputs file,
matched by instruction and input), and with `--dataset-responses` the prompt file's own
chosen and rejected answers. Identical texts count once. They are scored by one annotator:
a reward source (`rm:`, `rm-http:`, `fn:`) scores each response alone; pairwise judges
(`judge:`, `http:`, or several annotators as a pool) judge every pair of a prompt's
candidates, and a response's score is its mean win probability (Borda).

Writes raylign's ranked format, which `raylign train rrhf-offline` reads (as it reads RRHF's
released `{query, responses, scores}` files): one JSON line per prompt with `messages`,
`prompt`, `instruction`, `input`, `responses`, `scores`, `sources`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter

from raylign.config import ConfigError, InputPath, OutputFile, RayAddress, StrictModel
from raylign.data.prompt_list import PromptListConfig
from raylign.data.readers import DataError, read_outputs
from raylign.feedback.config import AnnotatorConfig, check_annotators, parse_spec


class RankConfig(StrictModel):
    prompts: PromptListConfig
    samples: list[InputPath] = []
    dataset_responses: bool = False
    annotators: list[AnnotatorConfig]
    output: OutputFile = "runs/rank/ranked.jsonl"
    batch_size: int = 16  # prompts per Ray Data batch
    ray_address: RayAddress | None = None


def _key(instruction: str, text_input: str | None) -> tuple[str, str]:
    return instruction.strip(), (text_input or "").strip()


def read_candidates(path: str) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(instruction, input) -> [(response, source)] from a multi-sample or an outputs file."""
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for row in read_outputs(path):
        found.setdefault(_key(row["instruction"], row["input"]), []).append((row["output"], row["generator"]))
    return found


def dataset_answers(config: PromptListConfig) -> dict[str, tuple[str, str]]:
    """prompt_id -> (chosen, rejected) of the prompt file's preference rows."""
    from raylign.data.adapters import iter_rows

    return {row["prompt_id"]: (row["chosen"], row["rejected"])
            for row in iter_rows(config.path, "preference", config.format, on_error="skip")}


def gather(config: RankConfig) -> tuple[list[dict], dict]:
    """One group per prompt with at least two distinct candidates; and counts of what was matched."""
    from raylign.data.prompt_list import read_prompts

    prompts = read_prompts(config.prompts)
    files = {path: read_candidates(path) for path in config.samples}
    answers = dataset_answers(config.prompts) if config.dataset_responses else {}
    if config.dataset_responses and not answers:
        raise DataError(f"{config.prompts.path}: --dataset-responses needs chosen/rejected pairs; the file has none")
    counts = Counter()
    groups = []
    for row in prompts:
        candidates: dict[str, str] = {}
        for path, found in files.items():
            matched = found.get(_key(row["instruction"], row.get("input")), [])
            counts[path] += bool(matched)
            for text, source in matched:
                candidates.setdefault(text.strip(), source)
        if row["prompt_id"] in answers:
            chosen, rejected = answers[row["prompt_id"]]
            candidates.setdefault(chosen.strip(), "dataset_chosen")
            candidates.setdefault(rejected.strip(), "dataset_rejected")
        if len(candidates) < 2:
            counts["too_few"] += 1
            continue
        groups.append({"messages": row["messages"], "prompt": row["prompt"], "instruction": row["instruction"],
                       "input": row.get("input") or "", "responses": list(candidates),
                       "sources": list(candidates.values())})
    for path in files:
        if not counts[path]:
            raise DataError(f"{path}: none of its instructions matches a prompt of {config.prompts.path} "
                            f"(split '{config.prompts.split}'); rank the prompts it was sampled from")
    if not groups:
        raise DataError(f"{config.prompts.path}: no prompt has two candidates to rank (give --samples or "
                        "--dataset-responses)")
    return groups, {"prompts": len(prompts), "ranked": len(groups), "too_few_candidates": counts["too_few"],
                    "matched": {path: counts[path] for path in files}}


def borda(preferences: list[tuple[int, int, float]], k: int) -> list[float]:
    """Mean win probability of each of k candidates over its judged pairs (i, j, preference in [1, 2],
    1 = i better)."""
    wins, games = [0.0] * k, [0] * k
    for i, j, preference in preferences:
        p_j = preference - 1.0
        wins[i] += 1.0 - p_j
        wins[j] += p_j
        games[i] += 1
        games[j] += 1
    return [w / g if g else 0.5 for w, g in zip(wins, games)]


def score_groups(batch, reward):
    """Ray Data stage: a reward per candidate, each response scored alone with its real dialogue."""
    import pyarrow as pa

    groups = batch.to_pylist()
    rows = [{"messages": g["messages"], "response": r} for g in groups for r in g["responses"]]
    scores = iter(reward.score(rows)) if rows else iter(())
    for group in groups:
        group["scores"] = [float(next(scores)) for _ in group["responses"]]
    return pa.Table.from_pylist(groups)


def _by_reward(groups: list[dict], annotator: AnnotatorConfig, batch_size: int) -> list[dict]:
    import ray

    from raylign.feedback.config import build_annotator

    reward = build_annotator(annotator)
    reward.prepare()
    try:
        ds = ray.data.from_items(groups, override_num_blocks=max(1, math.ceil(len(groups) / batch_size)))
        ds = ds.map_batches(score_groups, fn_kwargs={"reward": reward.source}, batch_format="pyarrow",
                            batch_size=batch_size, num_cpus=0.05, compute=ray.data.TaskPoolStrategy(size=1))
        return ds.take_all()
    finally:
        reward.close()


def _by_judges(groups: list[dict], annotators: list[AnnotatorConfig], batch_size: int) -> list[dict]:
    from raylign.feedback.cache import AnnotationCache
    from raylign.feedback.cli import pool_of
    from raylign.feedback.job import annotate_rows

    pool = pool_of(annotators, cache=AnnotationCache()).prepare()
    rows = [{"instruction": g["instruction"], "input": g["input"], "output": g["responses"]} for g in groups]
    try:
        judged = annotate_rows(rows, pool, batch_size=batch_size * 4)
    finally:
        pool.close()
    per_group: dict[int, list] = {}
    for row in judged:
        per_group.setdefault(row["row"], []).append((row["index_1"], row["index_2"], row["preference"]))
    return [{**g, "scores": borda(per_group.get(i, []), len(g["responses"]))} for i, g in enumerate(groups)]


def rank(config: RankConfig) -> dict:
    from raylign.feedback.job import quiet_ray_data, write_jsonl
    from raylign.runtime import init_ray

    groups, summary = gather(config)
    started = time.time()
    init_ray(config.ray_address, quiet=True)
    quiet_ray_data()
    single = config.annotators[0] if len(config.annotators) == 1 else None
    if single is not None and single.kind == "reward":
        ranked = _by_reward(groups, single, config.batch_size)
    else:
        ranked = _by_judges(groups, config.annotators, config.batch_size)
    order = {g["prompt"]: i for i, g in enumerate(groups)}
    ranked.sort(key=lambda g: order[g["prompt"]])
    write_jsonl(ranked, config.output)
    best = Counter(g["sources"][max(range(len(g["scores"])), key=g["scores"].__getitem__)] for g in ranked)
    return {**summary, "output": str(config.output), "candidates": sum(len(g["responses"]) for g in ranked),
            "tied_groups": sum(len(set(g["scores"])) < 2 for g in ranked), "best_by_source": dict(best),
            "annotators": [a.name for a in config.annotators], "seconds": round(time.time() - started, 1)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylign annotate rank", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", required=True, help="prompt file (any format the adapters read)")
    parser.add_argument("--format", default="auto")
    parser.add_argument("--split", default="all", choices=("all", "train", "validation", "test"),
                        help="keep the prompts of this seeded split (the same split as `train rm`)")
    parser.add_argument("--limit", type=int, default=None, help="at most N prompts")
    parser.add_argument("--samples", action="append", default=[],
                        help="multi-sample lists or AlpacaEval outputs (repeat for several sources)")
    parser.add_argument("--dataset-responses", action="store_true", help="add the prompt file's chosen/rejected")
    parser.add_argument("--annotator", action="append", default=[], required=True,
                        help="rm:NAME, rm-http:URL, fn:MOD:FUNC, judge:MODEL[@TEMPLATE], http:URL#MODEL[@TEMPLATE]")
    parser.add_argument("--output", default="runs/rank/ranked.jsonl")
    parser.add_argument("--ray-address", default=None)
    return parser


def main(argv: list[str]) -> int:
    from raylign.config import build_config
    from raylign.preflight import check_config

    args = _parser().parse_args(argv)
    if not args.samples and not args.dataset_responses:
        raise ConfigError("rank needs candidates: --samples FILE (repeatable) and/or --dataset-responses")
    tree = {"prompts": {"path": args.prompts, "format": args.format, "split": args.split, "limit": args.limit},
            "samples": args.samples, "dataset_responses": args.dataset_responses,
            "annotators": [parse_spec(s).model_dump() for s in args.annotator], "output": args.output,
            "ray_address": args.ray_address}
    config = build_config(RankConfig, tree, "command line")
    check_config(config)
    check_annotators(config.annotators)
    summary = rank(config)
    print(json.dumps(summary, indent=2))
    return 0
