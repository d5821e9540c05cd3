"""`raylign bench sampling` and `bench sync` for real on the tiny model: every side generates
exactly the same tokens, and every timed push is served by the samplers."""

import json

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_sampling_bench_sides_do_equal_work(tiny_model_dir, ray_cluster, tmp_path):
    from raylign.benchmarks.sampling_bench import SamplingBenchConfig, run

    config = SamplingBenchConfig(model=str(tiny_model_dir), batch_sizes=[3], actors=[2], max_new_tokens=6,
                                 repeats=2, cpus=2)
    payload = run(config, tmp_path)
    sides = {r["side"]: r for r in payload["rows"]}
    assert set(sides) == {"raw vLLM engine", "2 sampler actor(s)", "transformers generate"}
    for row in sides.values():  # EOS ignored everywhere: 3 prompts x 6 tokens per call
        assert row["tokens_per_call"] == 18 and row["same_prompts"] and row["rate"] > 0
        assert row["noise"] is not None
    assert sides["2 sampler actor(s)"]["cpus_each"] == 1.0
    compared = {r["compared"]: r for r in payload["ratios"]}
    assert compared["2 sampler actor(s) / raw vLLM engine"]["target"] == 0.9
    assert compared["2 sampler actor(s) / transformers generate"]["target"] == 4.0
    saved = json.loads((tmp_path / "sampling.json").read_text())
    assert saved["machine"]["cpu_cores"] > 0 and (tmp_path / "sampling.png").stat().st_size > 0


def test_sync_bench_pushes_are_served(tiny_model_dir, ray_cluster, tmp_path):
    from raylign.benchmarks.sync_bench import SyncBenchConfig, run

    config = SyncBenchConfig(model=str(tiny_model_dir), sync_models=["default"], backends=["hf"], samplers=2,
                             repeats=2, iteration_seconds=10.0)
    rows = run(config, tmp_path)["rows"]
    measured = [r for r in rows if r["transport"] == "object_store"]
    assert len(measured) == 1 and measured[0]["samplers"] == 2 and measured[0]["seconds"] > 0
    assert measured[0]["gb_per_s"] == pytest.approx(measured[0]["wire_gb"] / measured[0]["seconds"])
    assert measured[0]["iteration_share"] == pytest.approx(measured[0]["seconds"] / 10.0)
    assert any(r["transport"] == "nccl" and r["status"].startswith("not run") for r in rows)
    assert (tmp_path / "sync.json").exists() and (tmp_path / "sync.png").exists()
