import pytest

from raylign.algorithms.base import group_rows
from raylign.data.step_prompts import assign_steps
from raylign.engine.buffer import shard_units
from raylign.engine.loop import _rollout_stats


def rows_for(prompts: int, k: int):
    return [{"prompt_id": f"p{p}", "prompt_uid": f"0:{p}", "i": i} for p in range(prompts) for i in range(k)]


def test_shards_keep_groups_whole_and_cover_all():
    units = group_rows(rows_for(5, 3))
    shards = [shard_units(units, rank, 2) for rank in range(2)]
    assert [len(s["units"]) for s in shards] == [3, 2]
    assert all(s["filler"] is None for s in shards)
    seen = [g[0]["prompt_id"] for s in shards for g in s["units"]]
    assert sorted(seen) == [f"p{i}" for i in range(5)]
    assert all(len({r["prompt_id"] for r in g}) == 1 and len(g) == 3 for s in shards for g in s["units"])


def test_ranks_without_units_get_a_filler_not_a_copy_to_train_on():
    units = group_rows(rows_for(1, 2))
    shards = [shard_units(units, rank, 3) for rank in range(3)]
    assert [len(s["units"]) for s in shards] == [1, 0, 0]
    assert shards[0]["filler"] is None and shards[1]["filler"] is units[0] and shards[2]["filler"] is units[0]
    assert shard_units([], 0, 2) == {"units": [], "filler": None}


def test_groups_are_keyed_by_row_identity_not_prompt_text():
    rows = assign_steps([{"prompt_id": "same", "prompt": "hi"}], 2, 0, 1)  # one prompt twice in a step
    groups = group_rows([{**r, "sample": i} for r in rows for i in range(2)])
    assert len(groups) == 2 and all(len(g) == 2 for g in groups)


def test_assign_steps_cycles_and_resumes():
    prompts = [{"prompt_id": str(i)} for i in range(3)]
    rows = assign_steps(prompts, 2, 0, 3)
    assert [r["prompt_uid"] for r in rows] == ["0:0", "0:1", "1:0", "1:1", "2:0", "2:1"]
    assert [(r["batch_index"], r["prompt_id"]) for r in rows] == [
        (0, "0"), (0, "1"), (1, "2"), (1, "0"), (2, "1"), (2, "2")
    ]
    assert [r["prompt_id"] for r in assign_steps(prompts, 2, 2, 3)] == ["1", "2"]  # same prompts after a resume
    with pytest.raises(ValueError):
        assign_steps([], 2, 0, 1)


def test_rollout_stats_ignore_dataset_responses_for_reward():
    rows = [
        {"reward": 1.0, "response_token_ids": [1, 2], "sample_seconds": 2.0, "score_seconds": 1.0, "source": "policy",
         "finish_reason": "stop"},
        {"reward": 3.0, "response_token_ids": [1, 2, 3, 4], "sample_seconds": 2.0, "score_seconds": 1.0, "source": "policy"},
        {"reward": 9.0, "response_token_ids": [1], "sample_seconds": 2.0, "score_seconds": 1.0, "source": "dataset"},
    ]
    stats = _rollout_stats(rows)
    assert stats["reward_mean"] == 2.0 and stats["reward_max"] == 3.0
    assert stats["sample_tokens_per_s"] == 3.0  # 6 policy tokens in 2 s
    assert stats["rollouts"] == 3
    assert stats["stopped_fraction"] == 0.5  # of the two policy samples, one ended with EOS


def test_top_layers_freeze_the_rest_of_a_causal_lm(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from raylign.models.trainable import count_parameters, make_trainable

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(make_trainable(model, "all", 2, None)) == (total, total)
    trainable, _ = count_parameters(make_trainable(model, "top_layers", 1, None))
    layers = model.get_decoder().layers
    assert all(p.requires_grad for p in layers[-1].parameters())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert not model.get_input_embeddings().weight.requires_grad
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_wire_dtype_follows_sampler_dtype():
    from raylign.engine.loop import wire_dtype_for
    from raylign.engine.weight_sync import WeightSyncConfig
    from raylign.sampling.base import SamplingConfig

    auto = WeightSyncConfig()
    assert wire_dtype_for(SamplingConfig(backend="vllm"), auto).dtype == "bfloat16"
    assert wire_dtype_for(SamplingConfig(backend="hf"), auto).dtype == "auto"
    assert wire_dtype_for(SamplingConfig(backend="vllm", dtype="float32"), auto).dtype == "float32"
    assert wire_dtype_for(SamplingConfig(), WeightSyncConfig(dtype="float16")).dtype == "float16"


def test_nccl_transport_turns_sampler_restarts_off():
    """A restarted vLLM engine cannot rejoin the NCCL group: fail clearly, never hang."""
    from raylign.engine.loop import restartable_sampling
    from raylign.engine.weight_sync import WeightSyncConfig
    from raylign.sampling.base import SamplingConfig

    sampling = SamplingConfig(max_restarts=3)
    assert restartable_sampling(sampling, WeightSyncConfig(transport="nccl")).max_restarts == 0
    assert restartable_sampling(sampling, WeightSyncConfig()).max_restarts == 3


def test_previous_run_is_set_aside_not_mixed(tmp_path):
    from raylign.engine.loop import _set_aside_previous_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    _set_aside_previous_run(run)
    assert not run.exists()
    (moved,) = [p for p in tmp_path.iterdir() if p.name.startswith("run-")]
    assert (moved / "metrics.jsonl").read_text() == '{"step": 1}\n'
    _set_aside_previous_run(tmp_path / "never-existed")  # nothing to do


def test_resume_without_a_checkpoint_is_an_error(tmp_path):
    from raylign.config import ConfigError
    from raylign.engine.config import EngineConfig
    from raylign.engine.loop import run_engine

    config = EngineConfig(output_dir=str(tmp_path / "run"), resume=True)
    with pytest.raises(ConfigError, match="holds no resumable checkpoint"):
        run_engine(config, "unused", [{"prompt": "x"}], None, None, None, run_name="t")


def test_resume_with_another_prompts_per_step_is_an_error(tmp_path):
    import json

    from raylign.config import ConfigError
    from raylign.engine.config import EngineConfig
    from raylign.engine.loop import run_engine

    (tmp_path / "run" / "latest").mkdir(parents=True)
    state = {"step": 2, "policy_version": 2, "data_position": {"next_step": 2, "prompts_per_step": 4}}
    (tmp_path / "run" / "latest" / "raylign_state.json").write_text(json.dumps(state))
    config = EngineConfig(output_dir=str(tmp_path / "run"), resume=True, prompts_per_step=2, num_iterations=4)
    with pytest.raises(ConfigError, match="resume with engine.prompts_per_step=4"):
        run_engine(config, "unused", [{"prompt": "x"}], None, None, None, run_name="t")


def test_resumed_run_drops_the_metrics_of_steps_it_retrains(tmp_path):
    import json

    from raylign.metrics import drop_metrics_after

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "lo')
    assert drop_metrics_after(path, 2) == 2
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    assert drop_metrics_after(tmp_path / "absent.jsonl", 1) == 0


def test_last_logged_step_reads_the_highest_step(tmp_path):
    import json

    from raylign.metrics import last_logged_step

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 3, 2)) + '{"step": 9, "lo')
    assert last_logged_step(path) == 3  # the cut-off line is not a row
    assert last_logged_step(tmp_path / "absent.jsonl") == 0


@pytest.mark.parametrize("override, field", [
    ("sampling.num_samples=0", "sampling.num_samples"),
    ("engine.num_iterations=-1", "engine.num_iterations"),
    ("engine.prompts_per_step=0", "engine.prompts_per_step"),
    ("sampling.top_p=0", "sampling.top_p"),
    ("engine.trainer.optim.lr=0", "engine.trainer.optim.lr"),
])
def test_impossible_settings_fail_at_load_naming_the_key(override, field):
    from raylign.config import ConfigError, load_config
    from raylign.launch.recipes import recipe_class

    with pytest.raises(ConfigError) as info:
        load_config(recipe_class("grpo"), "jobs/grpo_hh.yaml", [override])
    assert str(info.value).startswith(f"jobs/grpo_hh.yaml: key '{field}'") and "unknown key" not in str(info.value)
