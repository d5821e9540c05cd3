"""`raylign bench project`: a projection (not a measurement) of one GRPO iteration for a 7B policy on 8 and 32 GPUs.

Each stage's work is counted for the 7B workload (FLOPs for prefill, scoring, reference and
training; bytes for decode and weight sync) and divided by a stated GPU rate (peak x an
assumed utilisation, or bandwidth x efficiency). Seconds measured on this machine do not
carry over (a CPU's rate cancels out of any such scaling); what does is measured as
dimensionless factors from runs/bench/*.json:

* actor efficiency: one sampler actor over the raw vLLM engine with the same CPUs
  (sampling.json, largest batch), i.e. what Ray and raylign's rollout code cost on top of
  vLLM; the sampling stage is divided by it;
* overlap efficiency: how much of the ideal streaming gain (stages of step t+1 hidden behind
  step t) the measured streaming run achieved (loop.json, else engine.json); the streaming
  estimate keeps only that share of the ideal gain.

Layout assumed: half the GPUs run one vLLM sampler each (TP=1, 7B bf16 fits one 80 GB GPU);
the other half train (ZeRO-3/FSDP, full fine-tune, Adam) and also run the reward and
reference forwards between updates; weights go to the samplers by NCCL broadcast.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from pydantic import Field

from raylign.benchmarks.report import bar_chart, format_table
from raylign.config import StrictModel


class GPUAssumptions(StrictModel):
    name: str = "H100 SXM 80GB"
    bf16_tflops: float = 989.0  # dense peak
    hbm_tb_s: float = 3.35
    memory_gb: float = 80.0
    mfu_train: float = Field(0.35, gt=0, le=1)
    mfu_forward: float = Field(0.45, gt=0, le=1)  # prefill, reward, reference forwards
    decode_bandwidth_efficiency: float = Field(0.6, gt=0, le=1)
    intra_node_broadcast_gb_s: float = 150.0  # NCCL broadcast over NVLink, effective
    inter_node_broadcast_gb_s: float = 40.0  # NCCL broadcast over 400 Gb/s InfiniBand, effective
    gpus_per_node: int = 8


class WorkloadAssumptions(StrictModel):
    policy_params: float = 7.0e9
    reward_params: float = 7.0e9
    reference: bool = True
    layers: int = 32  # Llama-3-8B / Qwen2.5-7B-like GQA shape, for the KV cache
    kv_heads: int = 8
    head_dim: int = 128
    prompts: int = 128
    samples: int = 8
    prompt_tokens: int = 256
    response_tokens: int = 512
    epochs: int = 1
    sampler_fraction: float = Field(0.5, gt=0, lt=1)


def measured_factors(bench_dir: str | Path) -> dict:
    """Actor and overlap efficiencies from a suite run's JSON files; 1.0 (and a note) where absent."""
    bench_dir = Path(bench_dir)
    factors = {"actor_efficiency": 1.0, "overlap_efficiency": 1.0, "sources": []}
    sampling = _load(bench_dir / "sampling.json")
    if sampling:
        largest = max(r["batch"] for r in sampling["rows"])
        at = {r["side"]: r for r in sampling["rows"] if r["batch"] == largest}
        if "raw vLLM engine" in at and "1 sampler actor(s)" in at:
            factors["actor_efficiency"] = min(1.0, at["1 sampler actor(s)"]["rate"] / at["raw vLLM engine"]["rate"])
            factors["sources"].append(f"actor efficiency: sampling.json, batch {largest}")
        factors["rollout_scaling"] = [{"actors": r["actors"], "tokens_per_s": r["rate"], "noise": r["noise"]}
                                      for r in sampling["rows"] if r["batch"] == largest and r["actors"]]
    stages = _stage_costs(bench_dir)
    if stages:
        factors["overlap_efficiency"] = overlap_efficiency(stages["sequential"], stages["streaming"])
        factors["measured_stages"] = stages
        factors["sources"].append(f"overlap efficiency: {stages['source']}")
    return factors


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _stage_costs(bench_dir: Path) -> dict | None:
    """Sequential and streaming stage seconds: raylign's GRPO loop bench, else the engine bench (RRHF)."""
    loop = _load(bench_dir / "loop.json")
    if loop:
        runs = {r["variant"]: r for r in loop["results"] if r.get("trainer") == "raylign"}
        if {"sequential", "streaming"} <= set(runs):
            return {"source": "loop.json (GRPO)", **{k: {"iteration": runs[k]["s_per_iteration"], **runs[k]["stages"]}
                                                     for k in ("sequential", "streaming")}}
    engine = _load(bench_dir / "engine.json")
    if engine and len(engine.get("iterations", [])) == 2:
        sequential, streaming = ({"iteration": r["iteration_s"], "sample": r["sample_s"], "score": r["score_s"],
                                  "train": r["train_s"], "sync": r["sync_s"]} for r in engine["iterations"])
        return {"source": "engine.json (RRHF)", "sequential": sequential, "streaming": streaming}
    return None


def overlap_efficiency(sequential: dict, streaming: dict) -> float:
    """Share of the ideal streaming gain a measured streaming run achieved, in [0, 1].

    Ideal: with sequential stage costs, streaming would take max(sample, score + train) + sync."""
    ideal = max(sequential["sample"], sequential["score"] + sequential["train"]) + sequential["sync"]
    possible = sequential["iteration"] - ideal
    if possible <= 0:
        return 1.0
    return min(1.0, max(0.0, (sequential["iteration"] - streaming["iteration"]) / possible))


def project(gpus: int, gpu: GPUAssumptions, work: WorkloadAssumptions, actor_efficiency: float = 1.0,
            overlap: float = 1.0) -> dict:
    """Per-stage seconds of one iteration on `gpus` GPUs, sequential and streaming."""
    samplers = max(1, round(gpus * work.sampler_fraction))
    trainers = gpus - samplers
    if trainers < 1:
        raise ValueError(f"{gpus} GPUs leave no trainer GPU at sampler_fraction={work.sampler_fraction}")
    peak = gpu.bf16_tflops * 1e12
    sequences = work.prompts * work.samples
    tokens = sequences * (work.prompt_tokens + work.response_tokens)
    weight_bytes = 2 * work.policy_params  # bf16
    # Sampling: prefill once per prompt (the k samples share it), then memory-bound decode.
    prefill = 2 * work.policy_params * math.ceil(work.prompts / samplers) * work.prompt_tokens / (peak * gpu.mfu_forward)
    kv_per_token = 2 * work.layers * work.kv_heads * work.head_dim * 2
    kv_room = gpu.memory_gb * 1e9 * 0.9 - weight_bytes
    if kv_room <= 0:
        raise ValueError(f"a {work.policy_params / 1e9:.0f}B policy does not fit one {gpu.name} (TP=1 assumed)")
    per_gpu = math.ceil(sequences / samplers)
    concurrent = max(1, min(per_gpu, int(kv_room // (kv_per_token * (work.prompt_tokens + work.response_tokens)))))
    waves = math.ceil(per_gpu / concurrent)
    step_bytes = weight_bytes + concurrent * kv_per_token * (work.prompt_tokens + work.response_tokens / 2)
    step = max(step_bytes / (gpu.hbm_tb_s * 1e12 * gpu.decode_bandwidth_efficiency),
               2 * work.policy_params * concurrent / (peak * gpu.mfu_forward))
    sample = (prefill + waves * work.response_tokens * step) / actor_efficiency
    forward_rate = trainers * peak * gpu.mfu_forward
    score = 2 * work.reward_params * tokens / forward_rate
    reference = 2 * work.policy_params * tokens / forward_rate if work.reference else 0.0
    train = 6 * work.policy_params * tokens * work.epochs / (trainers * peak * gpu.mfu_train)
    link = gpu.intra_node_broadcast_gb_s if gpus <= gpu.gpus_per_node else gpu.inter_node_broadcast_gb_s
    sync = weight_bytes / (link * 1e9)
    sequential = sample + score + reference + train + sync
    ideal = max(sample, score + reference + train) + sync
    train_memory_gb = 16 * work.policy_params / trainers / 1e9  # bf16 weights+grads, fp32 master + Adam
    return {"gpus": gpus, "sampler_gpus": samplers, "trainer_gpus": trainers, "sequences": sequences,
            "decode_batch_per_gpu": concurrent, "decode_waves": waves,
            "stages": {"sample": sample, "score": score, "reference": reference, "train": train, "sync": sync},
            "sequential_s": sequential, "streaming_ideal_s": ideal,
            "streaming_s": sequential - overlap * (sequential - ideal),
            "train_state_gb_per_gpu": train_memory_gb, "fits": train_memory_gb < 0.8 * gpu.memory_gb}


def render(projections: list[dict], factors: dict, gpu: GPUAssumptions, work: WorkloadAssumptions) -> str:
    rows = []
    for p in projections:
        s = p["stages"]
        rows.append([f"{p['gpus']} GPUs ({p['sampler_gpus']}+{p['trainer_gpus']})", s["sample"], s["score"],
                     s["reference"], s["train"], s["sync"], p["sequential_s"], p["streaming_s"]])
    table = format_table(["layout (samplers+trainers)", "sample", "score", "ref", "train", "sync", "seq. s",
                          "stream s"], rows)
    lines = [f"PROJECTION (not a measurement): one GRPO iteration, {work.policy_params / 1e9:.0f}B policy, "
             f"{work.reward_params / 1e9:.0f}B reward model, {work.prompts} prompts x {work.samples} samples, "
             f"{work.prompt_tokens}+{work.response_tokens} tokens, on {gpu.name}",
             table,
             f"assumed: {gpu.bf16_tflops:g} TFLOP/s bf16 peak, MFU train {gpu.mfu_train:g} / forward "
             f"{gpu.mfu_forward:g}, HBM {gpu.hbm_tb_s:g} TB/s x {gpu.decode_bandwidth_efficiency:g} in decode, "
             f"broadcast {gpu.intra_node_broadcast_gb_s:g} GB/s in a node / {gpu.inter_node_broadcast_gb_s:g} GB/s "
             "across nodes, full fine-tune with Adam (16 bytes/parameter sharded over the trainer GPUs)",
             f"measured here and applied: actor efficiency {factors['actor_efficiency']:.2f}, overlap efficiency "
             f"{factors['overlap_efficiency']:.2f} ({'; '.join(factors['sources']) or 'no suite results found: 1.0'})"]
    if factors.get("rollout_scaling"):
        lines.append("measured rollout throughput here (largest batch): " + ", ".join(
            f"{r['actors']} actor(s) {r['tokens_per_s']:.0f} tokens/s" for r in factors["rollout_scaling"]))
    return "\n".join(lines)


def run(bench_dir: str | Path = "runs/bench", gpu_counts: tuple[int, ...] = (8, 32), gpu: GPUAssumptions | None = None,
        work: WorkloadAssumptions | None = None) -> dict:
    gpu, work = gpu or GPUAssumptions(), work or WorkloadAssumptions()
    factors = measured_factors(bench_dir)
    projections = [project(n, gpu, work, factors["actor_efficiency"], factors["overlap_efficiency"])
                   for n in gpu_counts]
    text = render(projections, factors, gpu, work)
    print("\n" + text, flush=True)
    out = Path(bench_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"part": "project", "kind": "projection, not a measurement", "gpu": gpu.model_dump(),
               "workload": work.model_dump(), "factors": factors, "projections": projections, "text": text}
    (out / "project.json").write_text(json.dumps(payload, indent=2))
    labels = [f"{p['gpus']} GPUs {mode}" for p in projections for mode in ("sequential", "streaming")]
    values = [p[key] for p in projections for key in ("sequential_s", "streaming_s")]
    bar_chart(out / "project.png", f"PROJECTED s/iteration, {work.policy_params / 1e9:.0f}B GRPO (not measured)",
              labels, values, ylabel="seconds (projected)")
    return payload


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raylign bench project", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="bench_dir", default="runs/bench", help="a suite's output (factors measured)")
    parser.add_argument("--gpus", default="8,32")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="assumption overrides, e.g. gpu.mfu_train=0.4 work.response_tokens=1024")
    args = parser.parse_args(argv)
    from raylign.config import apply_overrides, build_config

    tree = apply_overrides({"gpu": {}, "work": {}}, args.set)
    run(args.bench_dir, tuple(int(g) for g in args.gpus.split(",")), build_config(GPUAssumptions, tree["gpu"], "gpu"),
        build_config(WorkloadAssumptions, tree["work"], "work"))
    return 0
