"""`raylign bench sync`: seconds and GB/s of one weight sync per transport, sampler backend and model size.

The pushed state dict is what the policy trainer pushes (HF names, tied embeddings sent
under both names) in the wire dtype (bf16 by default), read straight from the model's
safetensors so a 1.5B model costs 3 GB here rather than a 6 GB fp32 trainer copy; the
trainer-side fp32 -> bf16 cast is therefore not in these numbers. Sizes: the default model
and random-init 0.5B / 1.5B models of its architecture (benchmarks/model_sizes.py). Every
push is checked: each sampler must then report the pushed version. A configuration whose
estimated memory does not fit the free RAM runs with fewer samplers, or is skipped, and
says so.

    raylign bench sync [--sync-models default,0.5b,1.5b] [--backends vllm,hf] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Literal

import ray
from pydantic import Field

from raylign.benchmarks.report import (
    bar_chart,
    describe_machine,
    format_machine,
    format_params,
    format_table,
    mem_gib,
    save_part,
)
from raylign.config import StrictModel


class SyncBenchConfig(StrictModel):
    model: str = "SmolLM2-135M-Instruct"
    sync_models: list[Literal["default", "0.5b", "1.5b"]] = Field(default_factory=lambda: ["default", "0.5b", "1.5b"])
    backends: list[Literal["vllm", "hf"]] = Field(default_factory=lambda: ["vllm", "hf"])
    samplers: int = Field(2, ge=1)
    repeats: int = Field(3, ge=1)
    wire_dtype: str = "bfloat16"
    cpus: float = Field(2.0, gt=0)  # shared by the samplers of one configuration
    iteration_seconds: float | None = None  # measured iteration of the default model: sync's share of it
    kv_cache_gb: float = 1.0


def model_path_for(name: str, base: str) -> str:
    from raylign.benchmarks.model_sizes import build_sized_model
    from raylign.models.registry import resolve_model

    return str(resolve_model(base)) if name == "default" else str(build_sized_model(name, base))


def trainer_state_dict(model_path: str, wire_dtype: str) -> dict:
    """The tensors a trainer would push, in the wire dtype, tied embeddings under both names."""
    import torch
    from safetensors.torch import load_file

    dtype = getattr(torch, wire_dtype)
    state = {}
    for file in sorted(Path(model_path).glob("*.safetensors")):
        state.update({k: v.to(dtype) for k, v in load_file(file).items()})
    config = json.loads((Path(model_path) / "config.json").read_text())
    if config.get("tie_word_embeddings") and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return state


def memory_estimate_gib(wire_bytes: int, samplers: int, backend: str, kv_cache_gb: float) -> float:
    """Peak RAM of one configuration: the source dict and its object-store copy, plus per sampler
    (vLLM) engine weights, KV cache, the /dev/shm file and the reload's copy, or (HF) model + received copy."""
    gib = wire_bytes / 2**30
    per_sampler = 3 * gib + kv_cache_gb + 0.5 if backend == "vllm" else 2 * gib + 0.3
    return 2 * gib + samplers * per_sampler


def fitting_samplers(wire_bytes: int, wanted: int, backend: str, kv_cache_gb: float, free_gib: float | None) -> int:
    """The most samplers (<= wanted) whose estimate fits 85% of the free RAM; 0 when none does."""
    if free_gib is None:
        return wanted
    for count in range(wanted, 0, -1):
        if memory_estimate_gib(wire_bytes, count, backend, kv_cache_gb) <= 0.85 * free_gib:
            return count
    return 0


def _sampling_config(backend: str, count: int, config: SyncBenchConfig):
    from raylign.sampling.base import SamplingConfig

    return SamplingConfig(backend=backend, dtype="bfloat16", max_new_tokens=8, num_samples=1, num_samplers=count,
                          num_cpus_per_sampler=config.cpus / count, vllm_kv_cache_gb=config.kv_cache_gb,
                          vllm_max_model_len=512)


def time_object_store(model_path: str, state: dict, backend: str, count: int, config: SyncBenchConfig) -> dict:
    """Warm-up push, then `repeats` timed pushes, each checked by the samplers' reported version."""
    from raylign.engine.weight_sync import WeightSyncConfig, make_weight_sync
    from raylign.sampling.actor import create_samplers

    samplers = create_samplers(model_path, _sampling_config(backend, count, config), count=count)
    try:
        sync = make_weight_sync(list(samplers), WeightSyncConfig(transport="object_store", dtype=config.wire_dtype))
        timings = []
        for version in range(1, config.repeats + 2):
            report = sync.push(state, version)
            versions = ray.get([s.policy_version.remote() for s in samplers])
            if versions != [version] * count:
                raise RuntimeError(f"after pushing version {version} the samplers report {versions}")
            if version > 1:  # the first push is the warm-up
                timings.append(report)
    finally:
        samplers.shutdown()
    seconds = [t["sync_seconds"] for t in timings]
    median = statistics.median(seconds)
    return {"seconds": median, "noise": (max(seconds) - min(seconds)) / (2 * median) if len(seconds) > 1 else None,
            "put_seconds": statistics.median(t["sync_put_seconds"] for t in timings),
            "load_seconds_max": statistics.median(t["sync_load_seconds_max"] for t in timings),
            "all_seconds": seconds}


def bench_model(name: str, config: SyncBenchConfig, log=print) -> list[dict]:
    import torch

    from raylign.benchmarks.model_sizes import llama_param_count

    path = model_path_for(name, config.model)
    state = trainer_state_dict(path, config.wire_dtype)
    wire_bytes = sum(t.numel() * t.element_size() for t in state.values())
    params = llama_param_count(json.loads((Path(path) / "config.json").read_text()))
    base = {"model": name, "params": params, "wire_dtype": config.wire_dtype, "wire_gb": wire_bytes / 1e9,
            "device": "cpu"}
    rows = []
    for backend in config.backends:
        count = fitting_samplers(wire_bytes, config.samplers, backend, config.kv_cache_gb, mem_gib("MemAvailable"))
        row = {**base, "transport": "object_store", "backend": backend, "samplers": count}
        if count == 0:
            rows.append({**row, "status": "skipped: the estimated memory does not fit the free RAM"})
            continue
        log(f"  sync {name} -> {count} {backend} sampler(s) ...")
        timing = time_object_store(path, state, backend, count, config)
        row.update(timing, load_1m=round(os.getloadavg()[0], 2), status="measured" if count == config.samplers else f"measured with {count} of "
                   f"{config.samplers} samplers (memory)", gb_per_s=wire_bytes / 1e9 / timing["seconds"])
        if config.iteration_seconds and name == "default":
            row["iteration_share"] = timing["seconds"] / config.iteration_seconds
        rows.append(row)
    rows.append({**base, "transport": "nccl", "backend": "vllm", "samplers": 0,
                 "status": f"not run: NCCL broadcast needs CUDA samplers and trainer ({torch.cuda.device_count()} "
                           "GPUs here); this command times the CPU transport"})
    del state
    return rows


def render(rows: list[dict]) -> str:
    table = format_table(
        ["model", "params", "transport", "backend", "samplers", "GB", "sync s", "noise", "put s", "load s", "GB/s",
         "iter %", "load"],
        [[r["model"], format_params(r["params"]), r["transport"], r["backend"], r["samplers"], r["wire_gb"],
          r.get("seconds"), f"±{100 * r['noise']:.0f}%" if r.get("noise") is not None else "-", r.get("put_seconds"),
          r.get("load_seconds_max"), r.get("gb_per_s"),
          f"{100 * r['iteration_share']:.1f}%" if r.get("iteration_share") is not None else "-", r.get("load_1m")]
         for r in rows])
    notes = [f"  {r['model']} {r['transport']} {r['backend']}: {r['status']}" for r in rows
             if r.get("status") != "measured"]
    return "Weight sync (one push to every sampler; GB = bytes of one copy on the wire)\n" + table + (
        "\n" + "\n".join(notes) if notes else "")


def quick_config(model: str) -> SyncBenchConfig:
    return SyncBenchConfig(model=model, sync_models=["default"], samplers=1, repeats=2)


def run(config: SyncBenchConfig, out_dir: str | Path = "runs/bench", machine: dict | None = None) -> dict:
    from raylign.runtime import init_ray

    init_ray(num_cpus=max(2, int(config.cpus + 0.999)), quiet=True, dashboard=False)
    machine = machine or describe_machine()
    rows = [row for name in config.sync_models for row in bench_model(name, config)]
    text = render(rows)
    print(f"\n{format_machine(machine)}\n{text}", flush=True)
    payload = {"setup": config.model_dump(), "rows": rows, "text": text}
    save_part(out_dir, "sync", payload, machine)
    measured = [r for r in rows if r.get("seconds")]
    if measured:
        bar_chart(Path(out_dir) / "sync.png", "Weight sync seconds per push (object store, CPU)",
                  [f"{r['model']} {r['backend']} x{r['samplers']}" for r in measured],
                  [r["seconds"] for r in measured], [r["noise"] for r in measured], ylabel="seconds")
    return payload


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raylign bench sync", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct", help="the default model (and base architecture)")
    parser.add_argument("--sync-models", help="comma list of default, 0.5b, 1.5b")
    parser.add_argument("--backends", help="comma list of sampler backends: vllm, hf")
    parser.add_argument("--samplers", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--wire-dtype", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--iteration-seconds", type=float, help="a measured iteration time: sync's share of it")
    parser.add_argument("--quick", action="store_true", help="smoke-test size: default model, 1 sampler, 2 pushes")
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args(argv)
    base = quick_config(args.model) if args.quick else SyncBenchConfig(model=args.model)
    updates = {"sync_models": args.sync_models and args.sync_models.split(","),
               "backends": args.backends and args.backends.split(","), "samplers": args.samplers,
               "repeats": args.repeats, "wire_dtype": args.wire_dtype, "iteration_seconds": args.iteration_seconds}
    config = SyncBenchConfig.model_validate({**base.model_dump(), **{k: v for k, v in updates.items() if v}})
    run(config, args.out)
    return 0
