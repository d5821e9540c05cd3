"""`raylign bench sampling`: tokens/s of raylign's sampler actors vs the raw vLLM engine vs transformers `generate`.

Every side gets the same model, prompts (bundled HH prompts through the chat template),
batch, precision (bf16), greedy decoding and max_new_tokens with EOS ignored, so each call
generates exactly batch x max_new_tokens tokens. Every side also gets the same CPU budget:
the raw engine and `generate` each run in one Ray actor holding all of it; N sampler actors
hold budget/N each. The raw side is vLLM's `LLM.generate` on pre-tokenized prompts with the
sampler's own engine settings and SamplingParams (the sampled token's log-prob included, as
training needs it); the actor side is what the engine calls each step (`sample_batch`:
Ray round trip, chat template, rollout rows). Sides run one after the other, each warmed up
on the measured batch shape first; the noise printed is the spread over the repeats. With
`--gpus G` every side also gets G GPUs (N actors G/N each) and the rows say `cuda`.

    raylign bench sampling [--batch-sizes 1,16,64] [--actors 1,2,4] [--gpus 1] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import ray
from pydantic import Field

from raylign.benchmarks.report import (
    bar_chart,
    describe_machine,
    format_machine,
    format_ratio,
    format_table,
    rate_summary,
    ratio,
    save_part,
    verdict,
)
from raylign.config import StrictModel

ACTORS_VS_RAW_TARGET = 0.9  # issue #11: all actors together >= 0.9x the raw engine
ACTORS_VS_GENERATE_TARGET = 4.0  # ... and >= 4x transformers generate


class SamplingBenchConfig(StrictModel):
    model: str = "SmolLM2-135M-Instruct"
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 16, 64])
    actors: list[int] = Field(default_factory=lambda: [1, 2, 4])
    max_new_tokens: int = Field(64, ge=1)
    max_prompt_tokens: int = Field(128, ge=8)
    repeats: int = Field(3, ge=1)
    cpus: float | None = None  # the CPU budget every side gets; None = this machine's usable cores
    gpus: float = Field(0.0, ge=0)  # a GPU budget per side (GPU rows); 0 = CPU only
    raw: bool = True
    generate: bool = True
    kv_cache_gb: float = 1.0


def cpu_budget(config: SamplingBenchConfig) -> float:
    if config.cpus:
        return float(config.cpus)
    return float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


def bench_prompts(model_path: str, count: int, max_prompt_tokens: int) -> tuple[list[dict], list[list[int]]]:
    """`count` HH prompt rows (cycled when the bundled file has fewer) and their chat-template ids."""
    from raylign.data.adapters import load_rows
    from raylign.data.bundled import BUNDLED_HH
    from raylign.models.chat import as_messages, encode_prompt, load_tokenizer

    pool = load_rows(BUNDLED_HH, "preference", on_error="skip")
    rows = [{**pool[i % len(pool)], "prompt_id": f"bench-{i}", "batch_index": 0} for i in range(count)]
    tokenizer = load_tokenizer(model_path)
    return rows, [encode_prompt(tokenizer, as_messages(r), max_prompt_tokens) for r in rows]


def sampling_config(config: SamplingBenchConfig, actors: int, budget: float):
    from raylign.sampling.base import SamplingConfig

    return SamplingConfig(backend="vllm", num_samples=1, max_new_tokens=config.max_new_tokens, temperature=0.0,
                          ignore_eos=True, dtype="bfloat16", max_prompt_tokens=config.max_prompt_tokens,
                          num_samplers=actors, num_cpus_per_sampler=budget / actors,
                          num_gpus_per_sampler=config.gpus / actors, vllm_kv_cache_gb=config.kv_cache_gb)


class RawEngine:
    """vLLM's LLM in a Ray actor, called directly on token ids: the engine without raylign."""

    def __init__(self, model_path: str, config):
        from raylign.sampling.vllm_sampler import VLLMSampler

        sampler = VLLMSampler(model_path, config)  # the engine settings the sampler actors use
        self.engine, self.params = sampler.engine, sampler._params(1)

    def threads(self) -> int:
        import torch

        return torch.get_num_threads()

    def run(self, prompt_ids: list[list[int]]) -> tuple[int, float]:
        start = time.perf_counter()
        outputs = self.engine.generate([{"prompt_token_ids": ids} for ids in prompt_ids], self.params, use_tqdm=False)
        seconds = time.perf_counter() - start
        return sum(len(c.token_ids) for o in outputs for c in o.outputs), seconds


class HFGenerate:
    """transformers `generate` on a left-padded batch, greedy, bf16, exactly max_new_tokens per row."""

    def __init__(self, model_path: str, max_new_tokens: int, threads: int, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM

        from raylign.models.chat import load_tokenizer

        torch.set_num_threads(threads)
        self.tokenizer = load_tokenizer(model_path)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.bfloat16).to(device).eval()
        self.device = device
        self.max_new_tokens = max_new_tokens

    def threads(self) -> int:
        import torch

        return torch.get_num_threads()

    def run(self, prompt_ids: list[list[int]]) -> tuple[int, float]:
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompt_ids)
        ids = torch.full((len(prompt_ids), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompt_ids):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        start = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      max_new_tokens=self.max_new_tokens,
                                      min_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
            if self.device != "cpu":
                torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return (out.shape[1] - width) * len(prompt_ids), seconds


def _torch_threads(_actor) -> int:
    """Runs inside a sampler actor (via __ray_call__): the thread count its engine computes with."""
    import torch

    return torch.get_num_threads()


def _time_actor(actor, prompts: dict[int, list], repeats: int) -> dict[int, dict]:
    results = {}
    for batch, ids in prompts.items():
        ray.get(actor.run.remote(ids))  # warm-up on the measured shape
        timed = [ray.get(actor.run.remote(ids)) for _ in range(repeats)]
        results[batch] = rate_summary([t for t, _ in timed], [s for _, s in timed])
    return results


def _time_samplers(samplers, rows: dict[int, list], repeats: int) -> dict[int, dict]:
    from raylign.engine.stages import SampleSettings, sample_batch

    results = {}
    for batch, batch_rows in rows.items():
        sample_batch(batch_rows, SampleSettings(samplers, 1))
        tokens, seconds = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            out = sample_batch(batch_rows, SampleSettings(samplers, 1))
            seconds.append(time.perf_counter() - start)
            tokens.append(sum(len(r["response_token_ids"]) for r in out))
        results[batch] = rate_summary(tokens, seconds)
        results[batch]["prompt_tokens"] = sum(len(r["prompt_token_ids"]) for r in out)
    return results


def run_sides(model_path: str, config: SamplingBenchConfig, log=print) -> list[dict]:
    """Each side in turn, all batch sizes each, one engine alive at a time."""
    from raylign.sampling.actor import create_samplers

    budget = cpu_budget(config)
    rows, ids = bench_prompts(model_path, max(config.batch_sizes), config.max_prompt_tokens)
    by_batch_rows = {b: rows[:b] for b in config.batch_sizes}
    by_batch_ids = {b: ids[:b] for b in config.batch_sizes}
    prompt_tokens = {b: sum(len(p) for p in by_batch_ids[b]) for b in config.batch_sizes}
    results = []
    device = "cuda" if config.gpus else "cpu"

    def record(side: str, actors: int | None, cpus_each: float, threads, per_batch: dict):
        for batch, summary in per_batch.items():
            seen = summary.pop("prompt_tokens", prompt_tokens[batch])
            results.append({"side": side, "device": device, "actors": actors, "batch": batch, "cpus_each": cpus_each,
                            "threads": threads, "prompt_tokens": seen, "same_prompts": seen == prompt_tokens[batch],
                            "load_1m": round(os.getloadavg()[0], 2), **summary})
            log(f"  {side:<28} batch {batch:>3}: {summary['rate']:8.1f} tokens/s")

    if config.raw:
        actor = ray.remote(RawEngine).options(num_cpus=budget, num_gpus=config.gpus).remote(
            model_path, sampling_config(config, 1, budget))
        record("raw vLLM engine", None, budget, ray.get(actor.threads.remote()),
               _time_actor(actor, by_batch_ids, config.repeats))
        ray.kill(actor)
    for count in config.actors:
        samplers = create_samplers(model_path, sampling_config(config, count, budget), count=count)
        try:
            threads = ray.get(samplers[0].__ray_call__.remote(_torch_threads))
            record(f"{count} sampler actor(s)", count, budget / count, threads,
                   _time_samplers(samplers, by_batch_rows, config.repeats))
        finally:
            samplers.shutdown()
    if config.generate:
        actor = ray.remote(HFGenerate).options(num_cpus=budget, num_gpus=config.gpus).remote(
            model_path, config.max_new_tokens, max(1, int(budget)), device)
        record("transformers generate", None, budget, ray.get(actor.threads.remote()),
               _time_actor(actor, by_batch_ids, config.repeats))
        ray.kill(actor)
    return results


def compare(rows: list[dict]) -> list[dict]:
    """Per batch: every actor count against the raw engine and against generate; raw against generate."""
    out = []
    for batch in sorted({r["batch"] for r in rows}):
        at = {r["side"]: r for r in rows if r["batch"] == batch}
        raw, generate = at.get("raw vLLM engine"), at.get("transformers generate")
        for side, row in at.items():
            if row["actors"] is None:
                continue
            for base, target in ((raw, ACTORS_VS_RAW_TARGET), (generate, ACTORS_VS_GENERATE_TARGET)):
                if base is not None:
                    out.append(_ratio_row(batch, row, base, target))
        if raw is not None and generate is not None:
            out.append(_ratio_row(batch, raw, generate, None))
    return out


def _ratio_row(batch: int, a: dict, b: dict, target: float | None) -> dict:
    r = ratio(a, b)
    row = {"batch": batch, "compared": f"{a['side']} / {b['side']}", **r, "target": target}
    row["verdict"] = verdict(r["value"], r["noise"], target) if target is not None else ""
    return row


def render(rows: list[dict], ratios: list[dict]) -> str:
    table = format_table(
        ["side", "device", "batch", "CPUs each", "threads", "tokens/s", "noise", "s/call", "load"],
        [[r["side"], r.get("device", "cpu"), r["batch"], r["cpus_each"], r["threads"], r["rate"],
          f"±{100 * r['noise']:.0f}%" if r["noise"] is not None else "-", r["seconds_per_call"], r.get("load_1m")]
         for r in rows])
    ratio_table = format_table(
        ["batch", "compared", "ratio", "target", "verdict"],
        [[r["batch"], r["compared"], format_ratio(r), f">= {r['target']}x" if r["target"] else "", r["verdict"]]
         for r in ratios])
    mismatched = [r for r in rows if not r["same_prompts"]]
    warn = "\nWARNING: prompt token counts differ between sides: " + ", ".join(
        f"{r['side']} batch {r['batch']}" for r in mismatched) if mismatched else ""
    cores = os.cpu_count() or 1
    loaded = max((r.get("load_1m") or 0.0 for r in rows), default=0.0)
    if loaded > cores:
        warn += (f"\nWARNING: the machine was loaded (1-min load average up to {loaded:.1f} on {cores} cores): other "
                 "processes took CPU from the sides unevenly (multi-threaded ones suffer most); the ratios are not "
                 "representative of an idle machine")
    return f"Sampling throughput (generated tokens/s)\n{table}\n\nRatios\n{ratio_table}{warn}"


def quick_config(model: str) -> SamplingBenchConfig:
    return SamplingBenchConfig(model=model, batch_sizes=[1, 4], actors=[1, 2], max_new_tokens=16, repeats=2)


def run(config: SamplingBenchConfig, out_dir: str | Path = "runs/bench", machine: dict | None = None) -> dict:
    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray

    model_path = str(resolve_model(config.model))
    budget = cpu_budget(config)
    init_ray(num_cpus=max(2, int(budget + 0.999)), quiet=True, dashboard=False)
    if ray.cluster_resources().get("CPU", 0) < budget:
        raise ValueError(f"the Ray cluster has {ray.cluster_resources().get('CPU', 0)} CPUs; --cpus {budget} asks more")
    if ray.cluster_resources().get("GPU", 0) < config.gpus:
        raise ValueError(f"the Ray cluster has {ray.cluster_resources().get('GPU', 0)} GPUs; --gpus {config.gpus} asks more")
    machine = machine or describe_machine()
    rows = run_sides(model_path, config)
    ratios = compare(rows)
    text = render(rows, ratios)
    print(f"\n{format_machine(machine)}\n{text}", flush=True)
    out = Path(out_dir)
    payload = {"setup": {**config.model_dump(), "cpu_budget": budget, "model_path": model_path},
               "rows": rows, "ratios": ratios, "text": text}
    save_part(out, "sampling", payload, machine)
    labels = [f"{r['side'].replace(' sampler actor(s)', ' actors')} b{r['batch']}" for r in rows]
    where = f"{config.gpus:g} GPU(s) + {budget:g} CPUs" if config.gpus else f"{budget:g} CPUs, no GPU"
    bar_chart(out / "sampling.png", f"Sampling tokens/s ({config.model}, {where} per side)", labels,
              [r["rate"] for r in rows], [r["noise"] for r in rows])
    return payload


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raylign bench sampling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--batch-sizes", type=_ints, help="prompts per call, e.g. 1,16,64")
    parser.add_argument("--actors", type=_ints, help="sampler actor counts, e.g. 1,2,4")
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--cpus", type=float, help="CPU budget per side (default: usable cores)")
    parser.add_argument("--gpus", type=float, help="GPU budget per side: GPU rows (N actors get gpus/N each)")
    parser.add_argument("--skip-raw", action="store_true")
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke-test size: batches 1,4; 1-2 actors; 16 tokens")
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args(argv)
    base = quick_config(args.model) if args.quick else SamplingBenchConfig(model=args.model)
    updates = {k: v for k, v in (("batch_sizes", args.batch_sizes), ("actors", args.actors),
                                 ("max_new_tokens", args.max_new_tokens), ("repeats", args.repeats),
                                 ("cpus", args.cpus), ("gpus", args.gpus)) if v is not None}
    updates.update(raw=not args.skip_raw, generate=not args.skip_generate)
    run(SamplingBenchConfig.model_validate({**base.model_dump(), **updates}), args.out)
    return 0
