"""Offline RRHF: ranked files -> token rows -> the same pure rrhf_loss as online, per query."""

import json

import pyarrow as pa
import pytest
import torch

from raylign.algorithms.rrhf import rrhf_loss
from raylign.algorithms.rrhf_offline import RRHFOfflineObjective, TokenizeRankLists, keep_ranks, split_responses
from raylign.data.adapters import iter_rows
from raylign.data.readers import DataError
from tests.helpers import method_recipe


def _ranked(messages, responses, scores):
    return {"prompt_id": "p", "prompt": messages[-1]["content"], "messages": messages, "responses": responses,
            "scores": scores}


def test_rrhf_released_format_reads_the_hh_query_as_turns(tmp_path):
    path = tmp_path / "rrhf.json"
    path.write_text(json.dumps([{"query": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how do I bake bread?\n\nAssistant:",
                                 "responses": [" Knead it.", " No."], "scores": [-0.5, -2.0]}]))
    (row,) = iter_rows(path, "ranklist")
    assert row["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                               {"role": "user", "content": "how do I bake bread?"}]
    assert row["responses"] == [" Knead it.", " No."] and row["scores"] == [-0.5, -2.0]


@pytest.mark.parametrize("bad, message", [
    ({"responses": ["a", "b"], "scores": [1.0]}, "has 1 items but 'responses' has 2"),
    ({"responses": ["a"], "scores": [1.0]}, "at least 2 responses"),
    ({"responses": ["a", "b"], "scores": [1.0, "high"]}, "must hold numbers"),
    ({"responses": ["a", 3], "scores": [1.0, 2.0]}, "must hold strings"),
])
def test_bad_ranked_rows_name_the_file_line_and_field(tmp_path, bad, message):
    path = tmp_path / "ranked.jsonl"
    path.write_text(json.dumps({"prompt": "q", **bad}) + "\n")
    with pytest.raises(DataError, match=message) as err:
        list(iter_rows(path, "ranklist"))
    assert "ranked.jsonl:1" in str(err.value)


def test_keep_ranks_spreads_over_the_ranking_best_and_worst_first():
    assert keep_ranks([3.0, 1.0, 2.0], None) == [0, 1, 2]
    assert keep_ranks([0.1, 0.9, 0.5, 0.3, 0.7], 2) == [0, 1]  # best (index 1) and worst (index 0)
    assert keep_ranks([0.1, 0.9, 0.5, 0.3, 0.7], 3) == [0, 1, 2]  # + the median
    assert split_responses([1, 2, 3, 4, 5], [2, 0, 3]) == [[1, 2], [], [3, 4, 5]]


def test_tokenize_ends_responses_with_eos_and_skips_tied_queries(tiny_model_dir):
    from raylign.models.chat import encode_prompt, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    messages = [{"role": "user", "content": "Say hi"}]
    rows = [_ranked(messages, ["hi", "hello there"], [1.0, 0.0]), _ranked(messages, ["a", "b"], [0.5, 0.5])]
    out = TokenizeRankLists(str(tiny_model_dir), 64, True, None)(pa.Table.from_pylist(rows)).to_pylist()
    assert len(out) == 1  # the tied query has no order to learn
    (row,) = out
    prompt = encode_prompt(tokenizer, messages, 64)
    responses = split_responses(row["response_ids"], row["response_lengths"])
    assert row["prompt_ids"] == prompt and all(r[-1] == tokenizer.eos_token_id for r in responses)
    assert row["scores"] == [1.0, 0.0] and row["length"] == sum(len(prompt) + len(r) for r in responses)
    kept = TokenizeRankLists(str(tiny_model_dir), 64, False, None)(pa.Table.from_pylist(rows))
    assert kept.num_rows == 2


def test_objective_loss_is_rrhf_loss_per_query_over_queries_of_different_k(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from raylign.models.sequences import pack_prompt_responses, token_logprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    objective = RRHFOfflineObjective(method_recipe("rrhf-offline"))
    objective.pad_id = 0
    rows = [{"prompt_ids": [5, 6], "response_ids": [7, 8, 2, 9, 2, 10, 11, 12, 2], "response_lengths": [3, 2, 4],
             "scores": [0.2, 0.9, -1.0], "length": 15},
            {"prompt_ids": [13], "response_ids": [14, 2, 15, 16, 2], "response_lengths": [2, 3], "scores": [1.0, 0.0],
             "length": 7}]
    loss_sum, weight, metrics = objective.loss(model, objective.collate(rows))
    want, orders = 0.0, []
    for row in rows:
        responses = split_responses(row["response_ids"], row["response_lengths"])
        batch = pack_prompt_responses([row["prompt_ids"]] * len(responses), responses, 0)
        with torch.no_grad():
            logprobs = token_logprobs(model, batch)
        loss, m = rrhf_loss(logprobs, batch["response_mask"], torch.tensor([row["scores"]]))
        want += float(loss)
        orders.append(m["accuracy_of_order"])
    assert weight == 2.0 and float(loss_sum.detach()) == pytest.approx(want, abs=1e-4)
    assert metrics["accuracy_of_order"] == pytest.approx(sum(orders) / 2, abs=1e-6)
