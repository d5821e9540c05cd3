"""Prompt files read by Ray Data into the engine's stream: the same prompts at the same steps as
the in-memory path (epochs, resume, split), clear errors, and a step that reaches the sample
stage in several Ray Data blocks is handed on only when whole."""

import gzip
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from ray import cloudpickle

from raylign.data.adapters import load_rows
from raylign.data.config import PromptDataConfig
from raylign.data.prompt_corpus import PromptCorpus, load_prompts
from raylign.data.readers import DataError
from raylign.data.rollout import written_by
from raylign.data.step_prompts import assign_steps, fetch_steps, start_step_server
from raylign.engine.loop import StepAssembler, prompt_step_datasets
from raylign.engine.stages import SampleSettings, sample_stage

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import test modules

TEXTS = [f"question number {i}" for i in range(50)]


@pytest.fixture(scope="module")
def corpus_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    jsonl = folder / "prompts.jsonl.gz"
    with gzip.open(jsonl, "wt") as f:
        f.writelines(json.dumps({"prompt": t}) + "\n" for t in TEXTS)
    parquet = folder / "prompts.parquet"
    pq.write_table(pa.table({"prompt": TEXTS}), parquet, row_group_size=16)
    return {"jsonl": str(jsonl), "parquet": str(parquet)}


def served(server, steps):
    return [(r["batch_index"], r["prompt_uid"], r["prompt"], r["messages"]) for s in steps for r in fetch_steps(server, s)]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_file_corpus_gives_the_steps_of_the_in_memory_list(ray_cluster, corpus_files, kind):
    path = corpus_files[kind]
    server = start_step_server(PromptCorpus(path, kind="prompt").check(), 8)
    try:
        expected = assign_steps(load_rows(path, "prompt"), 8, 0, 14)  # 112 rows: three epochs of 50
        steps = [9, 10, 11, 12, 13] + list(range(14))  # a resumed run's steps first, then a fresh run's
        got = served(server, steps)
        by_step = {s: [r for r in expected if r["batch_index"] == s] for s in range(14)}
        assert got == [(r["batch_index"], r["prompt_uid"], r["prompt"], r["messages"]) for s in steps for r in by_step[s]]
        assert ray.get(server.stats.remote())["corpus_rows"] == 50
    finally:
        ray.kill(server)


def test_split_and_limit_match_the_list_loader_and_an_empty_split_is_named(ray_cluster, corpus_files):
    path = corpus_files["jsonl"]
    data = PromptDataConfig(path=path, kind="prompt", split="train", limit=20)
    server = start_step_server(PromptCorpus.from_config(data).check(), 4)
    try:
        listed = load_prompts(data)
        assert [r[2] for r in served(server, range(6))] == [r["prompt"] for r in assign_steps(listed, 4, 0, 6)]
    finally:
        ray.kill(server)
    empty = start_step_server(PromptCorpus(path, kind="prompt", split="test", test_fraction=0.0).check(), 4)
    try:
        with pytest.raises(DataError, match=r"^\S+prompts.jsonl.gz \(split 'test'\): no prompts to train on$"):
            fetch_steps(empty, 0)
    finally:
        ray.kill(empty)


def test_stream_input_is_one_block_per_step(ray_cluster):
    server = start_step_server([{"prompt": t} for t in TEXTS[:5]], 3)
    try:
        (ds,) = list(prompt_step_datasets(server, 4, 9))
        blocks = [b.to_pylist() for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
        assert [[r["batch_index"] for r in b] for b in blocks] == [[s] * 3 for s in range(4, 9)]
    finally:
        ray.kill(server)


@ray.remote(num_cpus=0)
class EchoSampler:
    """Stands in for the policy: two canned samples per prompt; rejects over-long prompts like a sampler."""

    def policy_version(self):
        return 0

    def generate(self, rows, num_samples):
        return [{**r, "response": "ok", "response_token_ids": [1], "sample_index": k}
                for r in rows if r["prompt"] != "too long" for k in range(num_samples)]


def test_a_step_split_over_blocks_is_whole_only_when_all_its_rows_arrived(ray_cluster):
    prompts = [{"prompt": t} for t in ["a", "b", "too long", "c", "d", "e", "f", "g", "h", "i"]]
    rows = assign_steps(prompts[:6], 6, 0, 1) + assign_steps(prompts[6:], 4, 1, 2)  # 6 prompts, then 4
    ds = ray.data.from_items(rows, override_num_blocks=4)  # blocks of 3, 3, 2, 2 rows: each step in two
    ds = ds.map_batches(sample_stage, batch_format="pyarrow", batch_size=None, num_cpus=0.01,
                        compute=ray.data.TaskPoolStrategy(size=1),
                        fn_kwargs={"settings": SampleSettings([EchoSampler.remote()], 2, max_staleness=5)})
    steps, seen = StepAssembler(), []
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        rows = block.to_pylist()
        assert all(written_by("sample_stage") <= set(row) for row in rows)  # the declared stamps (data/rollout.py)
        seen.append([(step, len(batch)) for step, batch in steps.add(rows)])
    assert seen == [[], [(0, 10)], [], [(1, 8)]]  # step 0: 5 prompts sampled (one rejected) x 2
