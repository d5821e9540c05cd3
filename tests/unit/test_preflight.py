"""Bad settings and files end in one line naming the problem, before Ray or a model starts.

Each case runs the real command line (`raylign.cli.main`) with Ray's start replaced by a failure,
so a check that comes too late fails the test instead of starting a cluster."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from raylign.cli import main

FUNCTION_REWARD = ["reward.kind=function", "reward.function=raylign.scoring.rule_rewards:concise"]


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    import raylign.runtime

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started: the problem was not found before it")

    monkeypatch.setattr(raylign.runtime, "init_ray", refuse)


# A line Ray forwards from an actor of an earlier test in this process, e.g. "(PlacementGroupCleaner pid=413) ...".
RAY_ACTOR_LOG = re.compile(r"^(\x1b\[\d+m)?\([^)]*pid=\d+[^)]*\)")


def fails(capsys, argv: list[str], *expected: str) -> str:
    """The command exits with 2 and one error line holding every `expected` piece."""
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.strip() and "deprecated" not in line and not RAY_ACTOR_LOG.match(line)]
    assert len(lines) == 1, lines
    for piece in expected:
        assert piece in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def pairs(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Say {i}.", "chosen": f"{i}.", "rejected": "No."}) + "\n"
                            for i in range(4)))
    return path


def test_output_dir_that_is_a_file(capsys, tmp_path, tiny_model_dir):
    (tmp_path / "taken").write_text("not a folder")
    fails(capsys, ["train", "grpo", f"model={tiny_model_dir}", f"engine.output_dir={tmp_path / 'taken'}",
                   *FUNCTION_REWARD], "engine.output_dir:", "is a file, not a folder")


def test_output_dir_that_cannot_be_made(capsys, tiny_model_dir):
    fails(capsys, ["train", "sft", f"model={tiny_model_dir}", "output_dir=/proc/raylign-run"],
          "output_dir:", "cannot create or write the folder /proc/raylign-run")


def test_missing_model_of_serve(capsys, tmp_path):
    fails(capsys, ["serve", "rm", "--model", str(tmp_path / "no-such-model")], "model:", "no-such-model")


def test_unknown_model_names_the_known_ones(capsys, pairs):
    fails(capsys, ["train", "dpo", "model=my-org/some-model", f"data.path={pairs}"],
          "model: model 'my-org/some-model' is not a local directory", "hh-rm-smollm2")


def test_missing_reference_model(capsys, pairs, tiny_model_dir):
    fails(capsys, ["train", "dpo", f"model={tiny_model_dir}", f"data.path={pairs}", "reference.model=nope"],
          "reference.model:", "'nope'")


def test_missing_data_file(capsys, tmp_path, tiny_model_dir):
    fails(capsys, ["train", "rm", f"model={tiny_model_dir}", f"data.path={tmp_path / 'absent.jsonl'}"],
          "data.path:", "absent.jsonl does not exist")


def test_data_folder_that_is_no_dataset(capsys, tmp_path, tiny_model_dir):
    (tmp_path / "folder").mkdir()
    fails(capsys, ["train", "sft", f"model={tiny_model_dir}", f"data.path={tmp_path / 'folder'}"],
          "data:", "is a directory, not a data file")


def test_data_in_the_wrong_format_for_the_method(capsys, tmp_path, tiny_model_dir):
    demos = tmp_path / "demos.json"
    demos.write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "Hi."}]))
    fails(capsys, ["train", "dpo", f"model={tiny_model_dir}", f"data.path={demos}", "data.format=alpaca"],
          "data:", "format 'alpaca' gives", "not 'preference' rows")


def test_empty_data_file(capsys, tmp_path, tiny_model_dir):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    fails(capsys, ["train", "rm", f"model={tiny_model_dir}", f"data.path={empty}"], "data:", "holds no records")


def test_broken_json_line_names_the_line(capsys, tmp_path, tiny_model_dir):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"\n')
    fails(capsys, ["train", "rm", f"model={tiny_model_dir}", f"data.path={broken}"], "broken.jsonl:1", "not valid JSON")


def test_a_byte_order_mark_is_read_not_refused(tmp_path):
    from raylign.data.config import PromptDataConfig, TrainDataConfig
    from raylign.data.prompt_corpus import PromptCorpus
    from raylign.preflight import check_data

    rows = "".join(json.dumps({"prompt": f"Say {i}.", "chosen": "a", "rejected": "b"}) + "\n" for i in range(3))
    plain, gz = tmp_path / "bom.jsonl", tmp_path / "bom.jsonl.gz"
    plain.write_bytes(b"\xef\xbb\xbf" + rows.encode())
    gz.write_bytes(gzip.compress(b"\xef\xbb\xbf" + rows.encode()))
    for path in (plain, gz):
        assert check_data(TrainDataConfig(path=str(path)), "preference") == "generic"
        assert PromptCorpus.from_config(PromptDataConfig(path=str(path))).check().format == "generic"


def test_misspelled_reward_function(capsys, tiny_model_dir):
    fails(capsys, ["train", "raft", f"model={tiny_model_dir}", "reward.kind=function",
                   "reward.function=raylign.scoring.rule_rewardz:concise"], "reward.function:", "cannot import module")


def test_missing_reward_model(capsys, tiny_model_dir):
    fails(capsys, ["train", "grpo", f"model={tiny_model_dir}", "reward.model=no-such-rm"], "reward.model:", "no-such-rm")


def test_missing_deepspeed_config(capsys, tiny_model_dir):
    fails(capsys, ["train", "ppo", f"model={tiny_model_dir}", *FUNCTION_REWARD,
                   "engine.trainer.deepspeed_config=cluster/no_such_zero.json"],
          "engine.trainer.deepspeed_config:", "no_such_zero.json does not exist")


def test_resume_without_a_checkpoint(capsys, tmp_path, tiny_model_dir):
    fails(capsys, ["train", "rrhf", f"model={tiny_model_dir}", *FUNCTION_REWARD, f"engine.output_dir={tmp_path / 'run'}",
                   "engine.resume=true"], "engine.resume=true but", "holds no resumable checkpoint")


def test_more_cpus_than_the_cluster_has(capsys, tiny_model_dir):
    fails(capsys, ["train", "grpo", f"model={tiny_model_dir}", *FUNCTION_REWARD, "sampling.num_samplers=64",
                   "sampling.num_cpus_per_sampler=1"], "asks for", "sampling 64", "lower those settings")


def test_recipe_that_is_a_folder(capsys, tmp_path):
    fails(capsys, ["train", "sft", "--config", str(tmp_path)], "is a folder, not a recipe file")


def test_missing_held_out_file(capsys, pairs, tmp_path, tiny_model_dir):
    fails(capsys, ["train", "sft", f"model={tiny_model_dir}", f"data.path={pairs}", "data.format=generic",
                   f"data.test_path={tmp_path / 'test.jsonl'}"], "data.test_path:", "test.jsonl does not exist")


def test_output_file_that_is_a_folder(capsys, tmp_path, tiny_model_dir):
    fails(capsys, ["generate", "outputs", f"model={tiny_model_dir}", f"output={tmp_path}"],
          "output:", "is a folder; give a file name")


def test_eval_command_with_a_missing_model(capsys, pairs):
    fails(capsys, ["eval", "rm", "--model", "nope-rm", "--data", str(pairs)], "--model:", "'nope-rm'")


def test_annotator_with_a_missing_judge_model(capsys, pairs):
    fails(capsys, ["eval", "judges", "--annotator", "judge:no-judge", "--data", str(pairs)], "--annotator", "no-judge")


def test_lora_online_is_refused_at_load(capsys):
    fails(capsys, ["train", "grpo", "engine.trainer.trainable=lora"], "engine.trainer.trainable", "LoRA")


def test_a_gpu_trainer_on_a_machine_without_one(capsys, tiny_model_dir, monkeypatch):
    import raylign.preflight

    monkeypatch.setattr(raylign.preflight, "_local_resources", lambda address: {"CPU": 4.0, "GPU": 0.0})
    fails(capsys, ["train", "grpo", f"model={tiny_model_dir}", *FUNCTION_REWARD, "engine.trainer.use_gpu=true"],
          "asks for 1 GPUs", "engine.trainer 1")


def test_a_sampler_backend_that_is_not_installed(capsys, tiny_model_dir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    fails(capsys, ["train", "rrhf", f"model={tiny_model_dir}", *FUNCTION_REWARD, "sampling.backend=vllm"],
          "sampling.backend: vllm needs the 'vllm' package", "sampling.backend=hf")


def test_more_top_layers_than_the_model_has(capsys, tiny_model_dir, pairs):
    fails(capsys, ["train", "rm", f"model={tiny_model_dir}", f"data.path={pairs}", "trainable=top_layers",
                   "top_layers=8"], "top_layers=8 but", "has 2 blocks")
    fails(capsys, ["train", "raft", f"model={tiny_model_dir}", *FUNCTION_REWARD, "engine.trainer.trainable=top_layers",
                   "engine.trainer.top_layers=5"], "engine.trainer.top_layers=5 but")


def test_an_unknown_selection_metric_fails_at_load(capsys):
    fails(capsys, ["train", "dpo", "dpo.select_by=accuracy"], "key 'dpo.select_by'")


def test_an_empty_output_path(capsys, tiny_model_dir):
    fails(capsys, ["train", "grpo", f"model={tiny_model_dir}", *FUNCTION_REWARD, "engine.output_dir="],
          "engine.output_dir: required")


def test_a_ray_cluster_that_does_not_answer(capsys, tiny_model_dir):
    from tests.helpers import free_port

    fails(capsys, ["train", "sft", f"model={tiny_model_dir}", f"ray_address=127.0.0.1:{free_port()}"],
          "ray_address: no Ray cluster answers at 127.0.0.1:")


def test_a_split_that_holds_no_prompt(capsys, tiny_model_dir):
    fails(capsys, ["train", "grpo", f"model={tiny_model_dir}", *FUNCTION_REWARD, "data.split=test",
                   "data.test_fraction=0"], "data.split=test but data.test_fraction=0")
