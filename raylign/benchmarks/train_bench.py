"""`raylign bench train`: offline-trainer throughput (reward model, DPO, SFT) against TRL, side by side.

Same model, same pairs (only pairs that fit `max_length` whole, so neither side truncates),
same batch, precision (bf16 autocast or fp32), trainable layers (top N), learning rate and
number of steps; one process each with the same thread count (raylign: one Ray Train
worker; TRL: its Trainer in this process). DPO on both sides uses precomputed reference
log-probs. SFT trains on each pair's prompt and chosen reply (prompt tokens masked on
both sides, no packing). The first `warmup` steps are not timed. TRL is only needed here:

    pip install --no-deps trl==1.16.0     # (the `bench` extra; its other deps are raylign's already)
    raylign bench train [--steps 8] [--batch-size 8] [--max-length 128] [--objectives rm,dpo,sft] [--skip-trl]

Prints a table (s/step, rows/s, tokens/s, raylign/TRL speed ratio; a row is a pair for rm
and dpo, an example for sft) and writes runs/bench_train/results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from raylign.data.bundled import BUNDLED_HH


def _pairs(model_path: str, count: int, max_length: int) -> list[dict]:
    """The first `count` bundled HH pairs whose chosen and rejected both fit max_length, each
    with its token counts (prompt + chosen, prompt + rejected)."""
    from raylign.data.adapters import ADAPTERS
    from raylign.data.readers import DataError, iter_records
    from raylign.models.chat import encode_prompt, encode_response, load_tokenizer

    tokenizer = load_tokenizer(model_path)
    rows = []
    for record in iter_records(BUNDLED_HH):
        try:
            row = {**ADAPTERS[("hh", "preference")](record), "raw": record.data}
        except DataError:
            continue
        prompt = encode_prompt(tokenizer, row["messages"], 10_000)
        sizes = [len(prompt) + len(encode_response(tokenizer, row[k], 10_000)) for k in ("chosen", "rejected")]
        if max(sizes) <= max_length:
            rows.append({**row, "tokens": dict(zip(("chosen", "rejected"), sizes))})
        if len(rows) == count:
            break
    return rows


def tokens_per_row(rows: list[dict], kind: str) -> float:
    """Mean tokens one objective trains on per row: both sides of a pair (rm, dpo), or the
    prompt and chosen reply (sft)."""
    if kind == "sft":
        return statistics.mean(r["tokens"]["chosen"] for r in rows)
    return statistics.mean(r["tokens"]["chosen"] + r["tokens"]["rejected"] for r in rows)


def add_rates(row: dict, batch_size: int, tokens: float) -> dict:
    """rows/s and tokens/s per side from s/step, and the speed-up (TRL s/step / raylign s/step)."""
    for side in ("raylign", "trl"):
        seconds = row.get(f"{side}_s_per_step")
        if seconds:
            row[f"{side}_rows_per_s"] = batch_size / seconds
            row[f"{side}_tokens_per_s"] = batch_size * tokens / seconds
    if row.get("trl_s_per_step") and row.get("raylign_s_per_step"):
        row["speedup_vs_trl"] = row["trl_s_per_step"] / row["raylign_s_per_step"]
    return row


def _step_seconds(stamps: list[float], warmup: int) -> float:
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][warmup:]
    return statistics.median(gaps) if gaps else float("nan")


def run_raylign(kind: str, model: str, data_path: str, args, threads: int) -> float:
    from raylign.config import config_from_tree
    from raylign.launch.methods import get_method
    from raylign.launch.recipes import recipe_class
    from raylign.training.trainer import run_offline

    common = {"model": model, "trainable": "top_layers", "top_layers": args.top_layers, "epochs": 1,
              "max_steps": args.warmup + args.steps + 1, "batch_size": args.batch_size, "bf16": args.bf16,
              "optim": {"lr": 1e-5, "warmup_ratio": 0.0}, "eval_every": 0, "keep_best": False, "log_every": 1, "num_workers": 1,
              "cpus_per_worker": threads, "length_window": 1,
              "data": {"path": data_path, "format": "hh", "max_length": args.max_length,
                       "test_fraction": 0.0, "validation_fraction": 0.0}}
    with tempfile.TemporaryDirectory(prefix="bench-raylign-") as out:
        tree = {**common, "output_dir": out, **({"dpo": {"beta": 0.1}} if kind == "dpo" else {})}
        recipe = config_from_tree(recipe_class(kind), tree, f"bench {kind}")
        run_offline(recipe, get_method(kind).load()(recipe))
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    stamps = [r["elapsed_s"] for r in records if r.get("split") == "train"]
    return _step_seconds(stamps, args.warmup)


def run_trl(kind: str, model_path: str, rows: list[dict], args, threads: int) -> float:
    import datasets
    import torch
    from transformers import TrainerCallback

    from raylign.models.trainable import freeze_to_top_layers

    torch.set_num_threads(threads)
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    def conversation(row, key):
        return [{"role": "assistant", "content": row[key]}]

    if kind == "sft":
        data = datasets.Dataset.from_list([{"prompt": row["messages"], "completion": conversation(row, "chosen")}
                                           for row in rows])
    else:
        data = datasets.Dataset.from_list([{"prompt": row["messages"], "chosen": conversation(row, "chosen"),
                                            "rejected": conversation(row, "rejected")} for row in rows])
    common = dict(per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps + 1,
                  learning_rate=1e-5, bf16=args.bf16, use_cpu=True, report_to="none", save_strategy="no",
                  logging_steps=1000, dataloader_num_workers=0, max_length=args.max_length, lr_scheduler_type="constant",
                  disable_tqdm=True, seed=0)
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out:
        if kind == "rm":
            from trl import RewardConfig, RewardTrainer

            from raylign.scoring.reward_model import load_reward_model

            model, tokenizer, _ = load_reward_model(model_path)
            freeze_to_top_layers(model, args.top_layers)
            trainer = RewardTrainer(model=model, args=RewardConfig(output_dir=out, **common), train_dataset=data,
                                    processing_class=tokenizer, callbacks=[Clock()])
        elif kind == "sft":
            from transformers import AutoModelForCausalLM
            from trl import SFTConfig, SFTTrainer

            from raylign.models.chat import load_tokenizer

            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
            freeze_to_top_layers(model, args.top_layers)
            # prompt tokens masked (completion_only_loss), one example per row (no packing), as raylign's SFT
            config = SFTConfig(output_dir=out, packing=False, completion_only_loss=True, **common)
            trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=load_tokenizer(model_path),
                                 callbacks=[Clock()])
        else:
            from transformers import AutoModelForCausalLM
            from trl import DPOConfig, DPOTrainer

            from raylign.models.chat import load_tokenizer

            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
            freeze_to_top_layers(model, args.top_layers)
            config = DPOConfig(output_dir=out, beta=0.1, precompute_ref_log_probs=True, **common)
            trainer = DPOTrainer(model=model, args=config, train_dataset=data, processing_class=load_tokenizer(model_path),
                                 callbacks=[Clock()])
        trainer.train()
    return _step_seconds(stamps, args.warmup)


def format_table(results: list[dict]) -> str:
    lines = [f"{'objective':<10}{'trainer':<10}{'s/step':>10}{'rows/s':>10}{'tokens/s':>11}{'speedup':>10}"]
    for row in results:
        for side in ("raylign", "trl"):
            if row.get(f"{side}_s_per_step"):
                ratio = f"{row['speedup_vs_trl']:.2f}x" if side == "raylign" and "speedup_vs_trl" in row else ""
                lines.append(f"{row['objective']:<10}{side:<10}{row[f'{side}_s_per_step']:>10.2f}"
                             f"{row[f'{side}_rows_per_s']:>10.2f}{row[f'{side}_tokens_per_s']:>11.0f}{ratio:>10}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="raylign bench train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per trainer")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--top-layers", type=int, default=2)
    parser.add_argument("--fp32", dest="bf16", action="store_false", help="float32 instead of bf16 autocast")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--objectives", default="rm,dpo,sft")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--out", default="runs/bench_train")
    args = parser.parse_args(argv)

    from raylign.models.registry import resolve_model
    from raylign.runtime import init_ray

    model_path = str(resolve_model(args.model))
    count = args.batch_size * (args.warmup + args.steps + 1)
    rows = _pairs(model_path, count, args.max_length)
    if len(rows) < count:
        raise SystemExit(f"only {len(rows)} bundled pairs fit max_length={args.max_length}; lower --steps or raise it")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "pairs.jsonl"
    data_path.write_text("".join(json.dumps(r["raw"]) + "\n" for r in rows))
    init_ray(None, num_cpus=max(2, args.threads), quiet=True)
    results = []
    kinds = [k for k in args.objectives.split(",") if k]
    unknown = set(kinds) - {"rm", "dpo", "sft"}
    if unknown:
        parser.error(f"--objectives: unknown {sorted(unknown)} (rm, dpo, sft)")
    for kind in kinds:
        row = {"objective": kind, "raylign_s_per_step": run_raylign(kind, model_path, str(data_path), args, args.threads)}
        if not args.skip_trl:
            row["trl_s_per_step"] = run_trl(kind, model_path, rows, args, args.threads)
        row["tokens_per_row"] = tokens_per_row(rows, kind)
        results.append(add_rates(row, args.batch_size, row["tokens_per_row"]))
    setup = {k: getattr(args, k) for k in ("model", "steps", "warmup", "batch_size", "max_length", "top_layers", "bf16",
                                           "threads")}
    (out / "results.json").write_text(json.dumps({"setup": setup, "results": results}, indent=2))
    print("\n" + format_table(results))
    print(f"\nsetup: {json.dumps(setup)}; results in {out / 'results.json'}")
    return 0
