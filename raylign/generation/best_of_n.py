"""Best-of-n as batch inference: Ray Data prompts -> n samples per prompt -> reward -> argmax.

    prompts --Ray Data--> sample (sampler actors, n each) --> score (RewardSource) --> keep argmax

The kept responses are written in AlpacaEval's outputs format (`instruction`, `output`,
`generator`), which `raylign eval leaderboard --model-outputs` reads. With n = 1 and no
reward it is plain generation: a model's AlpacaEval outputs (`raylign generate outputs`).
Defaults follow AlpacaFarm's best-of-n: n = 16, temperature 1.0, top_p 0.9.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from raylign.config import ModelName, OutputFile, RayAddress, StrictModel
from raylign.data.bundled import BUNDLED_HH
from raylign.data.prompt_list import PromptListConfig, read_prompts
from raylign.sampling.base import SamplingConfig
from raylign.scoring.base import RewardConfig, RewardSource

# The fields a sampled candidate keeps on its way to scoring (token ids and log-probs stay behind).
_CANDIDATE_FIELDS = ("prompt_id", "prompt", "messages", "instruction", "input", "dataset", "response", "sample_index", "finish_reason")


class BestOfNConfig(StrictModel):
    model: ModelName = "SmolLM2-135M-Instruct"
    generator: str | None = None  # the `generator` written with each output; default: the model's name + "_best_of_<n>"
    ray_address: RayAddress | None = None
    # HH-RLHF prompts shipped in raylign/assets by default; recipes point at AlpacaEval's
    data: PromptListConfig = PromptListConfig(path=str(BUNDLED_HH))
    sampling: SamplingConfig = SamplingConfig(num_samples=16, temperature=1.0, top_p=0.9, max_new_tokens=256)
    reward: RewardConfig = RewardConfig(kind="actor", model="hh-rm-smollm2")
    prompts_per_batch: int = 8  # prompts per Ray Data batch (one sampling call spread over the samplers)
    output: OutputFile = "runs/best_of_n/outputs.json"
    save_candidates: bool = True  # also every scored candidate, as JSONL beside the outputs


def select_best(candidates: list[dict]) -> list[dict]:
    """Per prompt (by `prompt_uid`), the candidate with the highest reward (first one on ties), in prompt order."""
    best: dict[str, dict] = {}
    counts: dict[str, int] = {}
    for row in candidates:
        uid = row["prompt_uid"]
        counts[uid] = counts.get(uid, 0) + 1
        reward = row.get("reward")
        current = best.get(uid)
        if current is None or (reward is not None and (current.get("reward") is None or reward > current["reward"])):
            best[uid] = row
    return [{**row, "num_candidates": counts[uid]} for uid, row in best.items()]


def to_alpaca_eval(row: dict, generator: str) -> dict:
    out = {"instruction": row["instruction"], "output": row["response"].strip(), "generator": generator, "dataset": row.get("dataset")}
    if row.get("input"):
        out["input"] = row["input"]
    if row.get("reward") is not None:
        out["reward"] = row["reward"]
        out["num_candidates"] = row["num_candidates"]
    return out


def sample_stage(batch, samplers: list, num_samples: int):
    """Ray Data stage: n candidates per prompt, the batch's prompts spread over the sampler actors."""
    import pyarrow as pa
    import ray

    rows = batch.to_pylist()
    chunks = [rows[i :: len(samplers)] for i in range(len(samplers))]
    calls = [s.generate.remote(chunk, num_samples) for s, chunk in zip(samplers, chunks) if chunk]
    out = [{k: r.get(k) for k in (*_CANDIDATE_FIELDS, "prompt_uid")} for part in ray.get(calls) for r in part]
    return pa.Table.from_pylist(out)


def score_stage(batch, reward: RewardSource | None):
    """Ray Data stage: a reward per candidate (the driver keeps each prompt's argmax)."""
    import pyarrow as pa

    rows = batch.to_pylist()
    if reward is not None and rows:
        for row, score in zip(rows, reward.score(rows)):
            row["reward"] = float(score)
    return pa.Table.from_pylist(rows)


def to_multisamples(candidates: list[dict], generator: str) -> list[dict]:
    """AlpacaFarm's multi-sample rows: one per prompt, `output` the list of its n samples in sample order."""
    rows: dict[str, dict] = {}
    for row in candidates:
        entry = rows.setdefault(row["prompt_uid"], {
            "instruction": row["instruction"], "input": row.get("input") or "", "output": [],
            "generator": generator, "dataset": row.get("dataset")})
        entry["output"].append(row["response"].strip())
    return list(rows.values())


def run(config: BestOfNConfig, best_of_n: bool = True, samples: bool = False) -> dict:
    """Generate, (score, select) and write; returns a summary.

    `best_of_n=False`: no reward; one response per prompt, or with `samples` all n as a list per prompt.
    """
    import ray

    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray
    from raylign.sampling.actor import create_samplers
    from raylign.scoring.sources import make_reward_source

    n = config.sampling.num_samples if best_of_n or samples else 1
    generator = config.generator or (Path(config.model).name + (f"_best_of_{n}" if best_of_n else ""))
    model_path = str(resolve_model(config.model))
    prompts = read_prompts(config.data)
    for i, row in enumerate(prompts):
        row["prompt_uid"] = str(i)
    init_ray(config.ray_address, quiet=True)
    samplers = create_samplers(model_path, config.sampling)
    reward = make_reward_source(config.reward, config.sampling.max_new_tokens) if best_of_n else None
    started = time.perf_counter()
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        context.issue_detectors_config.detectors = []  # candidate rows are small; its memory hints are noise
        blocks = max(1, math.ceil(len(prompts) / config.prompts_per_batch))
        ds = ray.data.from_items(prompts, override_num_blocks=blocks)
        ds = ds.map_batches(
            sample_stage, batch_format="pyarrow", batch_size=None, num_cpus=0.01,
            fn_kwargs={"samplers": list(samplers), "num_samples": n}, compute=ray.data.TaskPoolStrategy(size=1),
        )
        # A different CPU request keeps Ray Data from fusing the stages: batch i is scored while i+1 samples.
        ds = ds.map_batches(
            score_stage, batch_format="pyarrow", batch_size=None, num_cpus=0.02,
            fn_kwargs={"reward": reward}, compute=ray.data.TaskPoolStrategy(size=1),
        )
        candidates = [row for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow") for row in batch.to_pylist()]
    finally:
        samplers.shutdown()
        if reward is not None:
            reward.close()
    seconds = time.perf_counter() - started
    candidates.sort(key=lambda r: (int(r["prompt_uid"]), r["sample_index"]))
    if samples and not best_of_n:
        outputs = to_multisamples(candidates, generator)
    else:
        outputs = [to_alpaca_eval(row, generator) for row in select_best(candidates)]
    path = Path(config.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outputs, indent=1, ensure_ascii=False))
    summary = {
        "output": str(path), "generator": generator, "prompts": len(prompts), "outputs": len(outputs),
        "candidates": len(candidates), "n": n, "seconds": round(seconds, 1),
    }
    if best_of_n and config.save_candidates:
        cand_path = path.with_name(path.stem + "_candidates.jsonl")
        with cand_path.open("w") as handle:
            for row in candidates:
                handle.write(json.dumps({k: row.get(k) for k in ("prompt_uid", "instruction", "response", "reward")}) + "\n")
        summary["candidates_file"] = str(cand_path)
    if best_of_n and outputs:
        summary.update(_reward_gain(candidates))
    return summary


def _reward_gain(candidates: list[dict]) -> dict:
    """Mean reward of the kept response vs a random candidate (the first sample): what best-of-n bought."""
    groups: dict[str, list[float]] = {}
    for row in candidates:
        groups.setdefault(row["prompt_uid"], []).append(row["reward"])
    best = [max(v) for v in groups.values()]
    first = [v[0] for v in groups.values()]
    return {"mean_best_reward": sum(best) / len(best), "mean_first_sample_reward": sum(first) / len(first)}
