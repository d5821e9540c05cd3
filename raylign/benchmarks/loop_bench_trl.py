"""The TRL side of `raylign bench loop`: `GRPOTrainer` on the settings `loop_bench` derived
from the raylign recipe, run in a child process (so a crash in TRL's vLLM colocate mode,
or its memory, cannot take the raylign runs with it).

    python -m raylign.benchmarks.loop_bench_trl SPEC.json RESULT.json

SPEC holds the GRPOConfig keyword arguments, the model path, the prompts (message lists),
the reward model settings and the thread count; RESULT gets the optimizer-step stamps and
TRL's own per-stage timings (its `profiling_context` blocks, collected here instead of
being sent to a tracker).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


class RewardModelFunction:
    """A TRL reward function scoring with raylign's `RewardScorer`, the code the raylign reward
    actor runs, so both trainers see identical rewards for identical text."""

    __name__ = "reward_model"

    def __init__(self, model: str, max_length: int, batch_size: int):
        from raylign.scoring.reward_model import RewardScorer

        self.scorer = RewardScorer(model, max_length=max_length, batch_size=batch_size)

    def __call__(self, prompts, completions, **_) -> list[float]:
        rows = [{"messages": prompt, "response": completion[-1]["content"] if isinstance(completion, list) else completion}
                for prompt, completion in zip(prompts, completions)]
        return self.scorer.score_rows(rows)


def _collect_profiling(into: dict[int, dict[str, float]]):
    """Route TRL's profiling blocks ("GRPOTrainer.transformers.generate", ...) into `into`,
    summed per optimizer step."""
    from trl.extras import profiling

    def record(context, duration: float) -> None:
        into[int(context.step or 0)][context.name.split(".", 1)[-1]] += duration

    profiling.ProfilingContext._log_metrics = record


def run(spec: dict) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from raylign.models.chat import load_tokenizer
    from raylign.models.trainable import freeze_to_top_layers

    torch.set_num_threads(spec["threads"])
    if spec["trl"].get("use_vllm"):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # colocate reaches into the engine in-process
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    stages: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    _collect_profiling(stages)
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *_, **__):
            stamps.append(time.perf_counter())

        def on_step_end(self, *_, **__):
            stamps.append(time.perf_counter())

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(spec["model_path"], dtype=torch.float32)
    if spec["top_layers"] is not None:
        freeze_to_top_layers(model, spec["top_layers"])
    reward = RewardModelFunction(spec["reward_model"], spec["reward_max_length"], spec["reward_batch_size"])
    data = datasets.Dataset.from_list([{"prompt": messages} for messages in spec["prompts"]])
    with tempfile.TemporaryDirectory(prefix="bench-trl-grpo-") as out:
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=GRPOConfig(output_dir=out, **spec["trl"]),
                              train_dataset=data, processing_class=load_tokenizer(spec["model_path"]),
                              callbacks=[Clock()])
        trainer.train()
    return {"step_stamps": stamps, "stages": {str(k): dict(v) for k, v in sorted(stages.items())},
            "wall_s": time.perf_counter() - start}


if __name__ == "__main__":
    spec_path, result_path = sys.argv[1:3]
    result = run(json.loads(Path(spec_path).read_text()))
    Path(result_path).write_text(json.dumps(result))
