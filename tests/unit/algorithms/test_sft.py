"""SFT: prompt masking, packing of the token rows, the objective's loss (its NLL: test_core)."""

import pyarrow as pa
import pytest
import torch

from raylign.algorithms.sft import PackRows, SFTObjective, TokenizeDemonstrations
from tests.helpers import method_recipe


def test_demonstrations_mask_the_prompt_and_end_with_eos(tiny_model_dir):
    from raylign.models.chat import encode_prompt, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    rows = [{"prompt_id": "a", "prompt": "Say hi", "messages": [{"role": "user", "content": "Say hi"}], "response": "hi"}]
    out = TokenizeDemonstrations(str(tiny_model_dir), 64, "truncate")(pa.Table.from_pylist(rows)).to_pylist()[0]
    prompt = encode_prompt(tokenizer, [{"role": "user", "content": "Say hi"}], 64)
    assert out["input_ids"][: len(prompt)] == prompt and out["input_ids"][-1] == tokenizer.eos_token_id
    assert out["response_mask"] == [0] * len(prompt) + [1] * (len(out["input_ids"]) - len(prompt))
    assert out["length"] == len(out["input_ids"])
    dropped = TokenizeDemonstrations(str(tiny_model_dir), 4, "drop")(pa.Table.from_pylist(rows))
    assert dropped.num_rows == 0


def test_packing_concatenates_and_restarts_positions():
    rows = [{"input_ids": [1, 2, 3], "response_mask": [0, 1, 1], "position_ids": [0, 1, 2], "length": 3},
            {"input_ids": [4, 5], "response_mask": [0, 1], "position_ids": [0, 1], "length": 2},
            {"input_ids": [6, 7, 8, 9], "response_mask": [0, 0, 1, 1], "position_ids": [0, 1, 2, 3], "length": 4}]
    packs = PackRows(6)(pa.Table.from_pylist(rows)).to_pylist()
    assert [p["input_ids"] for p in packs] == [[1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert packs[0]["position_ids"] == [0, 1, 2, 0, 1] and packs[0]["response_mask"] == [0, 1, 1, 0, 1]
    objective = SFTObjective(method_recipe("sft"))
    objective.pad_id = 0
    batch = objective.collate(packs)
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    assert objective.weight(packs) == 3 + 2


def test_objective_loss_is_token_mean_nll_of_the_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    objective = SFTObjective(method_recipe("sft"))
    objective.pad_id = 0
    rows = [{"input_ids": [5, 6, 7, 8], "response_mask": [0, 0, 1, 1], "position_ids": [0, 1, 2, 3], "length": 4}]
    loss_sum, tokens, _ = objective.loss(model, objective.collate(rows))
    with torch.no_grad():
        logits = model(torch.tensor([[5, 6, 7, 8]])).logits[0].log_softmax(-1)
    want = -(logits[1, 7] + logits[2, 8])
    assert tokens == 2 and float(loss_sum.detach()) == pytest.approx(float(want), abs=1e-4)


def test_over_long_demonstrations_keep_the_prompt_and_cut_the_response_end():
    from raylign.algorithms.sft import fit_demonstration

    assert fit_demonstration([1, 2], [3, 4, 5], 8) == ([1, 2], [3, 4, 5])
    assert fit_demonstration([1, 2], [3, 4, 5, 6, 7, 8, 9], 6) == ([1, 2], [3, 4, 5, 6])
    # a long prompt keeps its end, at least half the budget, and the response fills the rest
    assert fit_demonstration(list(range(10)), [20, 21, 22, 23, 24], 6) == ([7, 8, 9], [20, 21, 22])
