"""`raylign bench corpus`: the driver's memory while the engine's prompt stream starts, small vs huge corpus.

Writes synthetic prompt corpora (default 10,000 and 10,000,000 prompts; streamed to disk, so the
writer is flat too), then for each one, in a fresh process with its own local Ray, drives the
part of the engine that feeds the sample stage (the step server reading the file with Ray Data,
and the stream's per-step datasets) for the first steps of a run that covers the corpus once,
and reports the driver's resident memory before and at its peak, and the reader actor's.
With `--legacy-max`, the old way (every prompt in a driver list, one row per step slot, then
`ray.data.from_items`) is measured beside it for the corpora up to that size.

No policy model is needed. Compare ratios within one run: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

WORDS = ("why how what when explain write describe compare list summarize the a of to and in for is on with "
         "river mountain poem recipe budget history physics garden letter story market cat ocean engine law "
         "music city winter bridge planet friend doctor language computer festival island").split()
ROWS_PER_WRITE = 100_000


def prompt_text(rng: random.Random, i: int) -> str:
    return f"#{i} " + " ".join(rng.choices(WORDS, k=rng.randint(8, 40))) + "?"


def write_corpus(path: Path, count: int) -> Path:
    """`count` generic rows {"prompt": ...}, written batch by batch (seeded: the same file every time);
    an existing complete file is reused."""
    if path.exists():
        return path
    rng = random.Random(count)
    partial = path.with_name(path.name + ".partial")
    if path.name.endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        with pq.ParquetWriter(partial, pa.schema([("prompt", pa.string())])) as writer:
            for start in range(0, count, ROWS_PER_WRITE):
                texts = [prompt_text(rng, i) for i in range(start, min(count, start + ROWS_PER_WRITE))]
                writer.write_table(pa.table({"prompt": texts}))
    else:
        with gzip.open(partial, "wt", compresslevel=1) as f:
            for start in range(0, count, ROWS_PER_WRITE):
                f.writelines(json.dumps({"prompt": prompt_text(rng, i)}) + "\n"
                             for i in range(start, min(count, start + ROWS_PER_WRITE)))
    partial.rename(path)
    return path


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss(threading.Thread):
    """Samples this process's resident memory every few milliseconds."""

    def __init__(self, every_s: float = 0.01):
        super().__init__(daemon=True)
        self.every_s, self.peak, self.running = every_s, rss_bytes(), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.every_s)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, rss_bytes())


def measure(path: str, count: int, per_step: int, steps: int, step_s: float, mode: str) -> dict:
    """In this (fresh) process: start Ray, then feed the first `steps` steps of a run over the
    whole corpus the new way (`stream`) or the old one (`legacy`), watching this process's memory."""
    import ray

    from raylign.data.prompt_corpus import PromptCorpus
    from raylign.data.step_prompts import start_step_server
    from raylign.engine.loop import prompt_step_datasets
    from raylign.runtime import init_ray

    init_ray(num_cpus=4, dashboard=False, quiet=True)
    context = ray.data.DataContext.get_current()  # as the engine's stream sets it
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.issue_detectors_config.detectors = []
    num_iterations = math.ceil(count / per_step)  # a run that covers the corpus once
    before = rss_bytes()
    watch = PeakRss()
    watch.start()
    started = time.perf_counter()
    server = None
    if mode == "stream":
        corpus = PromptCorpus(path, kind="prompt").check()  # the driver's whole share: peek at line 1
        server = start_step_server(corpus, per_step)
        ds = next(prompt_step_datasets(server, 0, num_iterations))
    else:
        from raylign.data.adapters import load_rows
        from raylign.data.step_prompts import assign_steps

        rows = assign_steps(load_rows(path, "prompt"), per_step, 0, num_iterations)
        ds = ray.data.from_items(rows, override_num_blocks=num_iterations)
    first = None
    for done, block in enumerate(ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0), 1):
        first = first or time.perf_counter() - started
        assert block.num_rows == per_step, block.num_rows
        time.sleep(step_s)  # the sample stage's time: the stream's read-ahead fills meanwhile
        if done >= steps:
            break
    peak = watch.stop()
    reader = ray.get(server.stats.remote()) if server is not None else {}
    return {"mode": mode, "prompts": count, "file_mb": os.path.getsize(path) / 2**20, "steps": done,
            "rss_before_mb": before / 2**20, "rss_peak_mb": peak / 2**20, "first_step_s": first,
            "reader_rss_mb": reader.get("rss_bytes", 0) / 2**20 or None, "reader_kept_rows": reader.get("kept_rows")}


def _measure_in_child(path: Path, count: int, args, mode: str) -> dict:
    """A fresh process per measurement, so one corpus's peak never hides in another's."""
    command = [sys.executable, "-m", "raylign.benchmarks.corpus_bench", "--measure", str(path), "--mode", mode,
               "--sizes", str(count), "--prompts-per-step", str(args.prompts_per_step), "--steps", str(args.steps),
               "--step-seconds", str(args.step_seconds)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"measuring {path} ({mode}) failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def table(results: list[dict]) -> str:
    base = {r["mode"]: r for r in results if r["prompts"] == min(x["prompts"] for x in results)}
    lines = [f"{'input':<8}{'prompts':>12}{'file MB':>9}{'steps':>7}{'RSS before':>12}{'RSS peak':>10}"
             f"{'growth':>9}{'peak / smallest':>17}{'1st step s':>12}{'reader RSS':>12}"]
    for r in results:
        ratio = r["rss_peak_mb"] / base[r["mode"]]["rss_peak_mb"]
        reader = f"{r['reader_rss_mb']:.0f} MB" if r["reader_rss_mb"] else "-"
        lines.append(f"{r['mode']:<8}{r['prompts']:>12,}{r['file_mb']:>9.1f}{r['steps']:>7}"
                     f"{r['rss_before_mb']:>9.0f} MB{r['rss_peak_mb']:>7.0f} MB"
                     f"{r['rss_peak_mb'] - r['rss_before_mb']:>6.0f} MB{ratio:>16.2f}x{r['first_step_s']:>12.1f}{reader:>12}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raylign bench corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 10_000_000], help="prompts per corpus")
    parser.add_argument("--format", choices=["jsonl.gz", "parquet"], default="jsonl.gz")
    parser.add_argument("--dir", default="runs/bench_corpus", help="where the corpora and results go (reused)")
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="steps fed per measurement")
    parser.add_argument("--step-seconds", type=float, default=0.25, help="pause per step (stands in for sampling)")
    parser.add_argument("--legacy-max", type=int, default=1_000_000,
                        help="also measure the old in-driver list for corpora up to this many prompts (0: never)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one measurement in this process
    parser.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.sizes[0], args.prompts_per_step, args.steps, args.step_seconds,
                                 args.mode)), flush=True)
        return 0
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for count in sorted(args.sizes):
        started = time.perf_counter()
        path = write_corpus(out / f"prompts-{count}.{args.format}", count)
        print(f"[bench corpus] {path}: {count:,} prompts ({time.perf_counter() - started:.0f} s to write or find)",
              flush=True)
        for mode in ("stream", "legacy") if count <= args.legacy_max else ("stream",):
            results.append(_measure_in_child(path, count, args, mode))
            print(f"[bench corpus] {mode}: {json.dumps(results[-1])}", flush=True)
    text = table(results)
    print("\nDriver memory while the prompt stream feeds the first steps (a run covering each corpus once)\n" + text)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
