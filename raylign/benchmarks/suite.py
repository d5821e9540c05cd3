"""`raylign bench` (or `raylign bench all`): every benchmark part, one after the other, in one process tree.

Parts: sampling (sampler actors vs raw vLLM vs transformers generate), engine (streaming vs
sequential iterations), loop (GRPO iteration vs TRL), train (offline trainers vs TRL), sync
(weight-sync seconds and GB/s by model size; its share of the measured iteration), project
(7B on 8 and 32 GPUs, a projection from the measured factors). Each part runs as a child
process (its own Ray cluster and memory, freed before the next) and can be run alone as
`raylign bench <part>`. Writes runs/bench/<part>.json and <part>.png, and summary.json
with the machine and the headline ratios; a failing part is reported and the rest still run.

    raylign bench [--quick] [--parts sampling,engine,loop,train,sync,project] [--out runs/bench]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

from raylign.benchmarks.report import (
    bar_chart,
    describe_machine,
    format_machine,
    format_params,
    format_ratio,
)

PARTS = ("sampling", "engine", "loop", "train", "sync", "project")
QUICK_ARGS = {
    "sampling": ["--quick"],
    "engine": ["--quick"],
    "loop": ["--quick", "--iterations", "2", "--warmup", "1"],
    "train": ["--steps", "1", "--warmup", "1", "--batch-size", "2", "--objectives", "rm"],
    "sync": ["--quick"],
    "project": [],
}
TAKES_MODEL = ("sampling", "engine", "train", "sync")


def part_argv(part: str, out: Path, quick: bool, model: str | None, iteration_seconds: float | None) -> list[str]:
    """The `raylign bench <part>` arguments the suite runs: output under `out`, quick sizes if asked."""
    argv = list(QUICK_ARGS[part]) if quick else []
    if part == "project":
        return argv + ["--from", str(out)]
    argv += ["--out", str(out / part if part in ("engine", "train") else out)]
    if model and part in TAKES_MODEL:
        argv += ["--model", model]
    if part == "sync" and iteration_seconds:
        argv += ["--iteration-seconds", f"{iteration_seconds:.4f}"]
    return argv


def measured_iteration(out: Path) -> float | None:
    """The default model's streaming iteration time from this run's loop (else engine) results."""
    loop = _load(out / "loop.json")
    for result in (loop or {}).get("results", []):
        if result.get("trainer") == "raylign" and result.get("variant") == "streaming":
            return result["s_per_iteration"]
    engine = _load(out / "engine.json")
    for row in (engine or {}).get("iterations", []):
        if row["mode"].startswith("streaming"):
            return row["iteration_s"]
    return None


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def collect(part: str, out: Path, machine: dict) -> dict | None:
    """The part's results as runs/bench/<part>.json (parts with their own folder are copied up) + its chart."""
    if part in ("engine", "train"):
        raw = _load(out / part / "results.json")
        if raw is None:
            return None
        payload = {"part": part, "machine": machine, **raw}
        (out / f"{part}.json").write_text(json.dumps(payload, indent=2))
    else:
        payload = _load(out / f"{part}.json")
    if payload is not None:
        chart(part, payload, out)
    return payload


def chart(part: str, payload: dict, out: Path) -> None:
    """Charts for the parts that do not draw their own."""
    if part == "engine" and payload.get("iterations"):
        rows = payload["iterations"]
        bar_chart(out / "engine.png", "Engine: seconds per iteration", [r["mode"] for r in rows],
                  [r["iteration_s"] for r in rows], ylabel="s/iteration")
    elif part == "loop" and payload.get("results"):
        rows = [r for r in payload["results"] if r.get("s_per_iteration")]
        bar_chart(out / "loop.png", "Online loop: seconds per iteration", [r["name"] for r in rows],
                  [r["s_per_iteration"] for r in rows], ylabel="s/iteration")
    elif part == "train" and payload.get("results"):
        labels, values = [], []
        for row in payload["results"]:
            for side in ("raylign", "trl"):
                if row.get(f"{side}_s_per_step"):
                    labels.append(f"{row['objective']} {side}")
                    values.append(row[f"{side}_s_per_step"])
        if values:
            bar_chart(out / "train.png", "Offline training: seconds per step", labels, values, ylabel="s/step")


def headlines(part: str, payload: dict | None) -> list[str]:
    """One line per compared pair, for the terminal and summary.json."""
    if not payload:
        return []
    if part == "sampling":
        return [f"batch {r['batch']}: {r['compared']} = {format_ratio(r)}"
                + (f" (target >= {r['target']}x: {r['verdict']})" if r.get("target") else "")
                for r in payload.get("ratios", [])]
    if part == "engine" and len(payload.get("iterations", [])) == 2:
        seq, stream = payload["iterations"]
        return [f"streaming speed-up over sequential: {seq['iteration_s'] / stream['iteration_s']:.2f}x "
                f"({stream['iteration_s']:.2f} s vs {seq['iteration_s']:.2f} s per iteration)"]
    if part == "loop":
        return [f"{r['name']}: {r['s_per_iteration']:.2f} s/iteration"
                + (f", {r['speedup_vs_trl']:.2f}x vs TRL" if r.get("speedup_vs_trl") else "")
                for r in payload.get("results", []) if r.get("s_per_iteration")]
    if part == "train":
        return [f"{r['objective']}: raylign {r['raylign_s_per_step']:.2f} s/step"
                + (f", TRL {r['trl_s_per_step']:.2f} s/step, {r['speedup_vs_trl']:.2f}x" if r.get("speedup_vs_trl")
                   else "") for r in payload.get("results", []) if r.get("raylign_s_per_step")]
    if part == "sync":
        return [f"{r['model']} ({format_params(r['params'])}, {r['wire_gb']:.2f} GB) -> {r['samplers']} {r['backend']} "
                f"sampler(s): {r['seconds']:.2f} s, {r['gb_per_s']:.2f} GB/s"
                + (f", {100 * r['iteration_share']:.1f}% of an iteration" if r.get("iteration_share") else "")
                for r in payload.get("rows", []) if r.get("seconds")]
    if part == "project":
        return [f"PROJECTED {p['gpus']} GPUs: {p['sequential_s']:.1f} s sequential, {p['streaming_s']:.1f} s "
                "streaming per iteration" for p in payload.get("projections", [])]
    return []


def run_part(part: str, argv: list[str]) -> tuple[int, float]:
    command = [sys.executable, "-m", "raylign.cli", "bench", part, *argv]
    print(f"\n=== raylign bench {part} {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = subprocess.run(command).returncode
    return code, time.perf_counter() - start


def available(part: str) -> bool:
    module = {"loop": "raylign.benchmarks.loop_bench", "train": "raylign.benchmarks.train_bench"}.get(part)
    return module is None or importlib.util.find_spec(module) is not None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raylign bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every part at smoke-test size")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    parser.add_argument("--model", help="the policy model for sampling, engine, train and sync (default: each part's)")
    parser.add_argument("--out", default="runs/bench")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = describe_machine()
    print(format_machine(machine), flush=True)
    summary = {"machine": machine, "quick": args.quick, "parts": {}}
    for part in [p for p in PARTS if p in parts]:
        if not available(part):
            summary["parts"][part] = {"status": "skipped: its module is not in this checkout"}
            continue
        code, seconds = run_part(part, part_argv(part, out, args.quick, args.model, measured_iteration(out)))
        payload = collect(part, out, machine) if code == 0 else None
        summary["parts"][part] = {"status": "ok" if code == 0 else f"failed (exit {code})", "seconds": seconds,
                                  "json": str(out / f"{part}.json") if payload else None,
                                  "headlines": headlines(part, payload)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n=== summary ({'quick sizes, smoke test only' if args.quick else 'full sizes'}); machine at the start:\n"
          f"{format_machine(machine)}")
    for part, entry in summary["parts"].items():
        print(f"{part}: {entry['status']}" + (f" in {entry['seconds']:.0f} s" if "seconds" in entry else ""))
        for line in entry.get("headlines", []):
            print(f"  {line}")
    print(f"results: {out}/<part>.json, <part>.png, summary.json")
    return 0 if all(e["status"] == "ok" or e["status"].startswith("skipped") for e in summary["parts"].values()) else 1
