"""The pure parts of `raylign bench loop` / `bench train`: settings matched to TRL, summaries, ratios."""

import tempfile
from pathlib import Path

import pytest

from raylign.benchmarks.loop_bench import (
    format_table,
    load_job,
    raylign_summary,
    speedups,
    trl_grpo_kwargs,
    trl_summary,
    update_shape,
)
from raylign.benchmarks.train_bench import add_rates, tokens_per_row

RECIPE = str(Path(__file__).resolve().parents[3] / "jobs" / "grpo_hh.yaml")


def test_trl_settings_follow_the_recipe():
    job = load_job(RECIPE, ["engine.num_iterations=5"], threads=2)
    kwargs = trl_grpo_kwargs(job)
    assert job.engine.trainer.torch_threads == 2 and job.engine.trainer.save_every == 0
    assert kwargs["num_generations"] == job.sampling.num_samples == 4
    assert kwargs["max_completion_length"] == job.sampling.max_new_tokens
    assert kwargs["learning_rate"] == job.engine.trainer.optim.lr
    assert kwargs["beta"] == job.grpo.kl_coef and kwargs["epsilon"] == job.grpo.cliprange
    assert kwargs["loss_type"] == "dapo" and kwargs["scale_rewards"] == "group"  # token-level loss, group std
    assert kwargs["max_steps"] == 5 and kwargs["bf16"] is False


@pytest.mark.parametrize("extra", [[], ["engine.trainer.num_minibatches=2"], ["grpo.epochs=2"],
                                   ["engine.trainer.micro_batch_size=8", "engine.trainer.num_minibatches=4"]])
def test_trl_batches_are_raylign_updates(extra):
    """TRL's derived batch sizes give one generation of prompts x k completions per iteration,
    the same optimizer steps, and old log-probs exactly when raylign computes them."""
    trl = pytest.importorskip("trl")
    job = load_job(RECIPE, ["engine.num_iterations=3", *extra], threads=2)
    shape = update_shape(job)
    config = trl.GRPOConfig(output_dir=tempfile.mkdtemp(), **trl_grpo_kwargs(job))
    assert config.generation_batch_size == job.engine.prompts_per_step * job.sampling.num_samples
    assert config.per_device_train_batch_size == shape["micro_batch"]
    assert config.steps_per_generation // config.gradient_accumulation_steps * config.num_iterations \
        == shape["optimizer_steps"]
    assert config.max_steps == 3 * shape["optimizer_steps"]
    trl_old_logprobs = config.num_iterations > 1 or config.steps_per_generation > config.gradient_accumulation_steps
    assert trl_old_logprobs == (shape["epochs"] > 1 or shape["minibatches"] > 1)


@pytest.mark.parametrize("overrides,match", [
    (["grpo.estimator=rloo"], "estimator"),
    (["engine.trainer.micro_batch_size=3"], "micro-batches"),
    (["sampling.max_new_tokens=100"], "max_length"),
])
def test_settings_trl_cannot_match_fail_early(overrides, match):
    with pytest.raises(ValueError, match=match):
        trl_grpo_kwargs(load_job(RECIPE, overrides, threads=2))


def test_raylign_summary_skips_warmup_and_finds_the_wait():
    rows = [{"iteration_seconds": 60.0, "sample_seconds": 20.0, "score_seconds": 5.0, "train_seconds": 9.0,
             "sync_seconds": 1.0}] + [
        {"iteration_seconds": s, "sample_seconds": 3.0, "score_seconds": 2.0, "train_seconds": 6.0, "sync_seconds": 1.0}
        for s in (10.0, 12.0, 20.0)]
    summary = raylign_summary(rows, [9.0, 1.0, 1.0, 1.0], [], warmup=1)
    assert summary["s_per_iteration"] == 12.0 and summary["mean_s_per_iteration"] == 14.0
    assert summary["stages"]["reward"] == 1.0 and summary["stages"]["wait"] == 7.0
    assert summary["stages"]["reference"] != summary["stages"]["reference"]  # no reference: nan
    with pytest.raises(ValueError, match="no timed"):
        raylign_summary(rows[:1], [], [], warmup=1)


def test_trl_summary_groups_optimizer_steps_into_iterations():
    stamps = [0.0, 4.0, 10.0, 13.0, 20.0]  # train begin, then 4 optimizer steps: 2 per iteration
    stages = {"0": {"_prepare_inputs": 3.0, "transformers.generate": 2.0, "reward_model": 0.5},
              "2": {"_prepare_inputs": 4.0, "transformers.generate": 2.5, "reward_model": 0.5}, "3": {}}
    summary = trl_summary(stamps, stages, steps_per_iteration=2, warmup=1)
    assert summary["iterations"] == [10.0]
    assert summary["stages"] == {"generate": 2.5, "reward": 0.5, "prepare": 1.0, "train": 6.0}


def test_speedups_are_trl_over_raylign_seconds():
    results = [{"trainer": "raylign", "variant": "streaming", "name": "r", "s_per_iteration": 5.0,
                "mean_s_per_iteration": 5.0, "stages": {"train": 2.5}},
               {"trainer": "trl", "variant": "hf", "name": "t", "s_per_iteration": 10.0, "mean_s_per_iteration": 10.0},
               {"trainer": "trl", "variant": "vllm", "name": "v", "error": "exit 1: no colocate on CPU"}]
    speedups(results)
    assert results[0]["speedup_vs_trl_hf"] == 2.0 and results[1]["speedup_vs_trl_hf"] == 1.0
    assert results[0]["speedup_vs_trl"] == 2.0 and "speedup_vs_trl" not in results[1]  # the suite's headline
    table = format_table(results)
    assert "2.00x" in table and "failed: exit 1: no colocate on CPU" in table and "train 2.50 (50%)" in table


def test_train_bench_rates_per_objective():
    rows = [{"tokens": {"chosen": 100, "rejected": 80}}, {"tokens": {"chosen": 120, "rejected": 60}}]
    assert tokens_per_row(rows, "sft") == 110 and tokens_per_row(rows, "dpo") == 180
    row = add_rates({"raylign_s_per_step": 2.0, "trl_s_per_step": 5.0}, batch_size=8, tokens=110)
    assert row["raylign_tokens_per_s"] == 440 and row["trl_rows_per_s"] == 1.6 and row["speedup_vs_trl"] == 2.5
