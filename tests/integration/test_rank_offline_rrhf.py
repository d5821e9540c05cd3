"""`annotate rank` on a real local Ray cluster: it joins a samples file and the dataset's own answers
per prompt, scores them (a reward source alone, or a pairwise pool as Borda scores) as a Ray Data
job, and offline RRHF's data stage reads the file it wrote."""

import json
import sys

import pyarrow as pa
import pytest
from ray import cloudpickle

from raylign.data.bundled import BUNDLED_HH
from raylign.data.prompt_list import PromptListConfig, read_prompts
from raylign.data.readers import DataError
from raylign.feedback.config import parse_spec
from raylign.feedback.rank import RankConfig, borda, rank

pytestmark = pytest.mark.integration
cloudpickle.register_pickle_by_value(sys.modules[__name__])
LENGTH = "fn:raylign.feedback.annotators:length_reward"


def test_borda_is_the_mean_win_probability():
    # 0 beats 1 surely, 1 and 2 tie, 0 vs 2 is 0.75 for 2
    assert borda([(0, 1, 1.0), (1, 2, 1.5), (0, 2, 1.75)], 3) == pytest.approx([0.625, 0.25, 0.625])
    assert borda([], 2) == [0.5, 0.5]


@pytest.fixture()
def sources(tmp_path):
    prompts = read_prompts(PromptListConfig(path=str(BUNDLED_HH), limit=6))
    samples = tmp_path / "samples.json"
    rows = [{"instruction": p["instruction"], "input": "", "output": [f"Sure {i}.", "Sure 0."], "generator": "mine"}
            for i, p in enumerate(prompts[:4])]
    samples.write_text(json.dumps(rows))
    return prompts, samples


def _config(samples, tmp_path, annotators, **extra):
    return RankConfig(prompts={"path": str(BUNDLED_HH), "limit": 6}, samples=[str(samples)],
                      annotators=[parse_spec(a) if isinstance(a, str) else a for a in annotators],
                      output=str(tmp_path / "ranked.jsonl"), **extra)


@pytest.mark.slow
def test_rank_then_read_for_offline_rrhf(ray_cluster, tiny_model_dir, sources, tmp_path):
    from raylign.data.adapters import iter_rows

    prompts, samples = sources
    summary = rank(_config(samples, tmp_path, [LENGTH], dataset_responses=True))
    assert (summary["prompts"], summary["ranked"], summary["matched"]) == (6, 6, {str(samples): 4})
    ranked = [json.loads(line) for line in (tmp_path / "ranked.jsonl").read_text().splitlines()]
    assert [r["instruction"] for r in ranked] == [p["instruction"] for p in prompts]
    first = ranked[0]  # "Sure 0." twice (sample 0 of both lists) counts once
    assert first["responses"][:1] == ["Sure 0."] and first["sources"][:1] == ["mine"]
    assert first["sources"][1:] == ["dataset_chosen", "dataset_rejected"]
    assert all(r["scores"] == [float(len(t)) for t in r["responses"]] for r in ranked)
    assert [len(r["responses"]) for r in ranked[1:4]] == [4, 4, 4] and len(ranked[5]["responses"]) == 2
    rows = list(iter_rows(tmp_path / "ranked.jsonl", "ranklist"))  # the trainer's adapter reads it back
    assert rows[0]["messages"] == prompts[0]["messages"]

    # two annotators make a pairwise pool: Borda scores order the candidates as their lengths do
    second = parse_spec(LENGTH).model_copy(update={"name": "length-2"})
    pooled = rank(_config(samples, tmp_path, [LENGTH, second]))
    assert (pooled["ranked"], pooled["too_few_candidates"]) == (3, 3)  # prompt 0 has one distinct sample
    for row in (json.loads(line) for line in (tmp_path / "ranked.jsonl").read_text().splitlines()):
        by_length = sorted(range(len(row["responses"])), key=lambda i: len(row["responses"][i]))
        assert [row["scores"][i] for i in by_length] == sorted(row["scores"])

    # the offline objective's Ray Data stage reads the file back: k = 2..4 responses a query, each
    # ending with EOS (the trainer itself runs in the golden run of tests/invariant)
    from raylign.algorithms.rrhf_offline import TokenizeRankLists, split_responses

    table = pa.Table.from_pylist(rows)
    tokens = TokenizeRankLists(str(tiny_model_dir), 96, True, None)(table).to_pylist()
    assert [len(t["scores"]) for t in tokens] == [len(r["responses"]) for r in rows]
    assert all(len(split_responses(t["response_ids"], t["response_lengths"])) == len(t["scores"]) for t in tokens)


def test_rank_errors_name_the_file(tmp_path, sources):
    _, samples = sources
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"instruction": "not one of the prompts", "output": ["a", "b"]}]))
    with pytest.raises(DataError, match="other.json: none of its instructions matches"):
        from raylign.feedback.rank import gather

        gather(_config(other, tmp_path, [LENGTH]))
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"instruction": "x", "output": [1, 2]}]))
    with pytest.raises(DataError, match=r"broken.json\[0\]: field 'output' should hold strings"):
        from raylign.feedback.rank import read_candidates

        read_candidates(str(broken))
