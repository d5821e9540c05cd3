"""ALMoST's response generation (RG) at scale: every (prompt, configuration) completion as one
Ray Data job over the configurations' sampler actors, with progress and an on-disk cache.

Each configuration names its model; each model gets its own sampler actors, and a batch's rows
go to the samplers of their own model. A completion is cached by the generator's fingerprint
(the model's weights, the sampling settings) and the exact few-shot text, so a rerun, a larger
run over the same prompts, or a run that died half way only generates what is new.
"""

from __future__ import annotations

import hashlib
import json
import math

from raylign.feedback.almost_filters import cut_response
from raylign.feedback.cache import ResponseCache


def generator_fingerprint(model_path: str, sampling) -> str:
    """What changes a completion: the model's weights and every sampling setting."""
    from raylign.models.registry import model_fingerprint

    settings = sampling.model_dump(exclude={"num_samplers", "num_cpus_per_sampler", "num_gpus_per_sampler"})
    blob = json.dumps({"model": model_path, "weights": model_fingerprint(model_path), "sampling": settings},
                      sort_keys=True, default=str)
    return "almost-rg:" + hashlib.sha256(blob.encode()).hexdigest()[:24]


def complete(samplers: list, texts: list[str], tag: str) -> list[str]:
    """One raw completion per text, spread over the sampler actors, in order ('' for a text the
    samplers skip as too long)."""
    import ray

    if not texts:
        return []
    rows = [{"prompt_id": f"{tag}-{i}", "prompt": text, "index": i} for i, text in enumerate(texts)]
    chunks = [rows[i :: len(samplers)] for i in range(len(samplers))]
    calls = [s.generate.remote(chunk, 1) for s, chunk in zip(samplers, chunks) if chunk]
    out = [""] * len(texts)
    for part in ray.get(calls):
        for r in part:
            out[r["index"]] = r["response"]
    return out


def complete_cached(samplers: list, texts: list[str], tag: str, cache: ResponseCache | None,
                    fingerprint: str) -> tuple[list[str], list[bool]]:
    """`complete`, reading what the cache has and writing what it generates; also which came
    from the cache."""
    found = cache.get_many(fingerprint, texts) if cache else [None] * len(texts)
    missing = [j for j, value in enumerate(found) if value is None]
    fresh = complete(samplers, [texts[j] for j in missing], tag)
    if cache and missing:
        cache.put_many(fingerprint, [texts[j] for j in missing], fresh)
    for j, value in zip(missing, fresh):
        found[j] = value
    generated = set(missing)
    return found, [j not in generated for j in range(len(texts))]


def respond_stage(batch, groups: dict[str, list], fingerprints: dict[str, str], cache: ResponseCache | None):
    """Ray Data stage: rows {prompt_index, config, model, text} -> + response (cut at the next
    turn) and whether it came from the cache."""
    import pyarrow as pa

    rows = batch.to_pylist()
    by_model: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_model.setdefault(row["model"], []).append(i)
    for model, indices in by_model.items():
        texts, cached = complete_cached(groups[model], [rows[i]["text"] for i in indices],
                                        f"rg{rows[indices[0]]['prompt_index']}", cache, fingerprints[model])
        for i, text, hit in zip(indices, texts, cached):
            rows[i]["response"], rows[i]["cached"] = cut_response(text), hit
    return pa.Table.from_pylist([{k: r[k] for k in ("prompt_index", "config", "response", "cached")} for r in rows])


def generate_responses(items: list[dict], groups: dict[str, list], fingerprints: dict[str, str],
                       cache: ResponseCache | None, rows_per_batch: int = 32) -> tuple[dict, dict]:
    """items: {prompt_index, config, model, text}. Returns {config: {prompt_index: response}} and
    counts (generated, cached), with a progress bar over the completions."""
    import ray
    from tqdm import tqdm

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    blocks = max(1, math.ceil(len(items) / rows_per_batch))
    ds = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        respond_stage, batch_format="pyarrow", batch_size=None, num_cpus=0.01,
        fn_kwargs={"groups": groups, "fingerprints": fingerprints, "cache": cache},
        compute=ray.data.TaskPoolStrategy(size=2),
    )
    responses: dict[str, dict[int, str]] = {}
    counts = {"generated": 0, "cached": 0}
    with tqdm(total=len(items), desc="almost responses", unit="resp") as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in batch.to_pylist():
                responses.setdefault(row["config"], {})[row["prompt_index"]] = row["response"]
                counts["cached" if row["cached"] else "generated"] += 1
            bar.update(batch.num_rows)
    return responses, counts
