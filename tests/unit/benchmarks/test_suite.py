"""The pure parts of the benchmark suite: rates and ratios with noise, tables, the machine
description, model sizes from config shapes, sync memory planning, the 7B projection, the suite's plumbing."""

import json
import math
import os

import pytest

from raylign.benchmarks import projection, report, sampling_bench, suite, sync_bench
from raylign.benchmarks.model_sizes import SIZES, llama_param_count, sized_config
from raylign.cli import find

SMOLLM2_135M = {  # the default model's config.json (shapes only)
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
    "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
    "vocab_size": 49152, "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False,
}


# --- rates, ratios, tables -------------------------------------------------------------------


def test_rate_summary_median_and_half_spread():
    summary = report.rate_summary([100, 100, 100], [1.0, 0.8, 1.25])  # 100, 125, 80 tokens/s
    assert summary["rate"] == pytest.approx(100.0)
    assert summary["noise"] == pytest.approx((125 - 80) / 2 / 100)
    assert report.rate_summary([50], [0.5])["noise"] is None  # one repeat: noise unknown
    with pytest.raises(ValueError):
        report.rate_summary([1, 2], [1.0])


def test_ratio_noise_adds_in_quadrature_and_verdicts():
    r = report.ratio({"rate": 90.0, "noise": 0.03}, {"rate": 100.0, "noise": 0.04})
    assert r["value"] == pytest.approx(0.9) and r["noise"] == pytest.approx(0.05)
    assert report.ratio({"rate": 1.0, "noise": None}, {"rate": 2.0, "noise": 0.1})["noise"] is None
    assert report.verdict(0.95, 0.01, 0.9) == "met"
    assert report.verdict(0.80, 0.01, 0.9) == "missed"
    assert report.verdict(0.88, 0.05, 0.9) == "within noise"
    assert report.format_ratio({"value": 1.234, "noise": 0.05}) == "1.23x ±5%"


def test_format_table_aligns_columns():
    text = report.format_table(["side", "tokens/s"], [["raw", 123.456], ["1 actor", 7.0], ["x", None]])
    lines = text.splitlines()
    assert len({len(line) for line in lines}) == 1  # every line the same width
    assert lines[1].startswith("raw") and lines[1].endswith("123.5") and lines[3].endswith("-")


def test_machine_description_is_this_machine():
    machine = report.describe_machine()
    assert machine["cpu_cores"] == os.cpu_count() and machine["ram_gib"] > 0
    assert "torch" in machine["versions"] and machine["date"].endswith("UTC")
    text = report.format_machine(machine)
    assert machine["cpu"] in text and machine["date"] in text
    import torch

    assert ("GPU: none" in text) == (not torch.cuda.is_available())


# --- model sizes -----------------------------------------------------------------------------


@pytest.mark.parametrize("tied,kv_heads", [(True, 2), (False, 4)])
def test_param_count_matches_an_allocated_model(tied, kv_heads):
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = {"hidden_size": 128, "intermediate_size": 320, "num_hidden_layers": 3, "num_attention_heads": 4,
             "num_key_value_heads": kv_heads, "head_dim": 32, "vocab_size": 500, "tie_word_embeddings": tied}
    model = LlamaForCausalLM(LlamaConfig(**shape))
    assert llama_param_count(shape) == sum(p.numel() for p in model.parameters())


def test_sized_configs_hit_their_targets_in_the_default_architecture():
    assert llama_param_count(SMOLLM2_135M) == 134_515_008  # SmolLM2-135M's published count
    for size, spec in SIZES.items():
        config = sized_config(SMOLLM2_135M, size)
        assert llama_param_count(config) == pytest.approx(spec["target"], rel=0.05), size
        assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 49152
        assert config["tie_word_embeddings"] and config["head_dim"] == 64
        assert config["num_attention_heads"] % config["num_key_value_heads"] == 0
    with pytest.raises(ValueError, match="unknown model size"):
        sized_config(SMOLLM2_135M, "7b")


# --- sampling comparisons ----------------------------------------------------------------------


def _row(side, batch, rate, actors=None, noise=0.02, same=True):
    return {"side": side, "batch": batch, "rate": rate, "noise": noise, "actors": actors, "cpus_each": 2,
            "threads": 2, "seconds_per_call": 1.0, "same_prompts": same}


def test_sampling_ratios_against_raw_and_generate():
    rows = [_row("raw vLLM engine", 16, 100.0), _row("2 sampler actor(s)", 16, 95.0, actors=2),
            _row("transformers generate", 16, 20.0), _row("raw vLLM engine", 1, 10.0),
            _row("1 sampler actor(s)", 1, 5.0, actors=1)]
    ratios = {(r["batch"], r["compared"]): r for r in sampling_bench.compare(rows)}
    vs_raw = ratios[(16, "2 sampler actor(s) / raw vLLM engine")]
    assert vs_raw["value"] == pytest.approx(0.95) and vs_raw["target"] == 0.9 and vs_raw["verdict"] == "met"
    vs_generate = ratios[(16, "2 sampler actor(s) / transformers generate")]
    assert vs_generate["value"] == pytest.approx(4.75) and vs_generate["verdict"] == "met"
    assert ratios[(16, "raw vLLM engine / transformers generate")]["target"] is None
    assert ratios[(1, "1 sampler actor(s) / raw vLLM engine")]["verdict"] == "missed"
    assert (1, "1 sampler actor(s) / transformers generate") not in ratios  # no generate row at batch 1
    text = sampling_bench.render(rows + [_row("4 sampler actor(s)", 16, 1.0, actors=4, same=False)], [])
    assert "WARNING: prompt token counts differ" in text and "4 sampler actor(s) batch 16" in text
    assert "machine was loaded" not in text
    busy = [{**row, "load_1m": 4.0 * os.cpu_count()} for row in rows]
    assert "machine was loaded" in sampling_bench.render(busy, [])


def test_sampling_quick_config_is_small_and_budget_defaults_to_cores():
    quick = sampling_bench.quick_config("m")
    assert max(quick.batch_sizes) <= 4 and max(quick.actors) <= 2 and quick.max_new_tokens <= 16
    assert sampling_bench.cpu_budget(quick) == len(os.sched_getaffinity(0))
    assert sampling_bench.cpu_budget(quick.model_copy(update={"cpus": 1.5})) == 1.5
    config = sampling_bench.sampling_config(quick, actors=4, budget=2.0)
    assert config.ignore_eos and config.temperature == 0 and config.num_cpus_per_sampler == 0.5


# --- weight sync memory planning ----------------------------------------------------------------


def test_sync_sampler_count_shrinks_to_fit_free_memory():
    gb15 = int(1.48e9 * 2)  # a 1.5B model in bf16
    assert sync_bench.fitting_samplers(gb15, 2, "vllm", 1.0, free_gib=64) == 2
    assert sync_bench.fitting_samplers(gb15, 2, "vllm", 1.0, free_gib=20) == 1
    assert sync_bench.fitting_samplers(gb15, 2, "vllm", 1.0, free_gib=4) == 0
    assert sync_bench.fitting_samplers(gb15, 3, "hf", 1.0, free_gib=None) == 3
    assert sync_bench.memory_estimate_gib(gb15, 1, "vllm", 1.0) > sync_bench.memory_estimate_gib(gb15, 1, "hf", 1.0)
    with pytest.raises(Exception):
        sync_bench.SyncBenchConfig(sync_models=["3b"])


# --- projection -----------------------------------------------------------------------------------


def test_projection_scales_with_gpus_and_measured_factors():
    gpu, work = projection.GPUAssumptions(), projection.WorkloadAssumptions()
    eight, thirty_two = projection.project(8, gpu, work), projection.project(32, gpu, work)
    assert eight["trainer_gpus"] == 4 and thirty_two["trainer_gpus"] == 16
    assert eight["stages"]["train"] == pytest.approx(4 * thirty_two["stages"]["train"])
    # one node broadcasts over NVLink, four nodes over InfiniBand
    assert eight["stages"]["sync"] == pytest.approx(2 * 7e9 / 150e9)
    assert thirty_two["stages"]["sync"] == pytest.approx(2 * 7e9 / 40e9)
    assert eight["streaming_ideal_s"] <= eight["streaming_s"] <= eight["sequential_s"]
    slow_actors = projection.project(8, gpu, work, actor_efficiency=0.5)
    assert slow_actors["stages"]["sample"] == pytest.approx(2 * eight["stages"]["sample"])
    no_overlap = projection.project(8, gpu, work, overlap=0.0)
    assert no_overlap["streaming_s"] == pytest.approx(no_overlap["sequential_s"])
    with pytest.raises(ValueError, match="no trainer GPU"):
        projection.project(1, gpu, work)


def test_overlap_efficiency_from_stage_costs():
    sequential = {"iteration": 20.0, "sample": 5.0, "score": 5.0, "train": 8.0, "sync": 2.0}
    # ideal streaming: max(5, 13) + 2 = 15, so 5 s can be saved; 2.5 s were
    assert projection.overlap_efficiency(sequential, {"iteration": 17.5}) == pytest.approx(0.5)
    assert projection.overlap_efficiency(sequential, {"iteration": 25.0}) == 0.0
    assert projection.overlap_efficiency(sequential, {"iteration": 10.0}) == 1.0


def test_measured_factors_read_from_suite_files(tmp_path):
    assert projection.measured_factors(tmp_path)["actor_efficiency"] == 1.0  # nothing measured yet
    (tmp_path / "sampling.json").write_text(json.dumps({"rows": [
        _row("raw vLLM engine", 64, 200.0), _row("1 sampler actor(s)", 64, 150.0, actors=1),
        _row("2 sampler actor(s)", 64, 190.0, actors=2), _row("1 sampler actor(s)", 1, 1.0, actors=1)]}))
    stages = {"sample": 5.0, "score": 5.0, "train": 8.0, "sync": 2.0}
    (tmp_path / "loop.json").write_text(json.dumps({"results": [
        {"trainer": "raylign", "variant": "sequential", "s_per_iteration": 20.0, "stages": stages},
        {"trainer": "raylign", "variant": "streaming", "s_per_iteration": 17.5, "stages": stages},
        {"trainer": "trl", "variant": "hf", "s_per_iteration": 40.0}]}))
    factors = projection.measured_factors(tmp_path)
    assert factors["actor_efficiency"] == pytest.approx(0.75)
    assert factors["overlap_efficiency"] == pytest.approx(0.5)
    assert [r["actors"] for r in factors["rollout_scaling"]] == [1, 2]
    payload = projection.run(tmp_path)
    assert (tmp_path / "project.json").exists() and (tmp_path / "project.png").exists()
    assert suite.headlines("project", suite.collect("project", tmp_path, {}))[0].startswith("PROJECTED 8 GPUs")
    assert "PROJECTION (not a measurement)" in payload["text"]


# --- the suite's plumbing ------------------------------------------------------------------------------


def test_cli_routes_bench_alone_to_the_suite():
    assert find(["bench"]).target == "raylign.benchmarks.suite:main"
    assert find(["bench", "--quick"]).target == "raylign.benchmarks.suite:main"
    assert find(["bench", "sampling", "--quick"]).target == "raylign.benchmarks.sampling_bench:main"
    assert find(["bench", "all"]).target == "raylign.benchmarks.suite:main"


def test_part_arguments(tmp_path):
    assert suite.part_argv("sampling", tmp_path, True, None, None) == ["--quick", "--out", str(tmp_path)]
    assert suite.part_argv("engine", tmp_path, False, "m", None) == ["--out", str(tmp_path / "engine"), "--model", "m"]
    assert "--model" not in suite.part_argv("loop", tmp_path, False, "m", None)
    assert suite.part_argv("sync", tmp_path, False, None, 12.5)[-2:] == ["--iteration-seconds", "12.5000"]
    assert suite.part_argv("project", tmp_path, True, None, None) == ["--from", str(tmp_path)]


def test_iteration_time_and_headlines_from_part_results(tmp_path):
    assert suite.measured_iteration(tmp_path) is None
    engine = {"iterations": [{"mode": "sequential (max_staleness=0)", "iteration_s": 20.0},
                             {"mode": "streaming (max_staleness=1)", "iteration_s": 16.0}]}
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "results.json").write_text(json.dumps(engine))
    payload = suite.collect("engine", tmp_path, {"cpu": "x"})
    assert payload["machine"] == {"cpu": "x"} and (tmp_path / "engine.png").exists()
    assert suite.measured_iteration(tmp_path) == 16.0
    assert suite.headlines("engine", payload) == ["streaming speed-up over sequential: 1.25x (16.00 s vs 20.00 s per iteration)"]
    sync_rows = [{"model": "default", "params": 1.345e8, "wire_gb": 0.27, "samplers": 2, "backend": "vllm",
                  "seconds": 1.5, "gb_per_s": 0.18, "iteration_share": 0.094}, {"model": "1.5b", "status": "skipped"}]
    lines = suite.headlines("sync", {"rows": sync_rows})
    assert len(lines) == 1 and "9.4% of an iteration" in lines[0]
    assert suite.headlines("loop", None) == []
    assert math.isclose(projection.WorkloadAssumptions().policy_params, 7e9)
