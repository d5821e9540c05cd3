"""Packing masks on hand examples; token log-probs on the tiny model."""

from __future__ import annotations

import pytest
import torch

from raylign.models.sequences import pack_prompt_responses, token_logprobs

PAD = 0


def test_pack_masks_hand_example():
    batch = pack_prompt_responses([[11, 12, 13], [21]], [[14, 15], [22, 23, 24, 25]], pad_id=PAD)
    assert batch["input_ids"].tolist() == [[11, 12, 13, 14, 15], [21, 22, 23, 24, 25]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert batch["response_mask"].tolist() == [[0, 0, 0, 1, 1], [0, 1, 1, 1, 1]]

    batch = pack_prompt_responses([[1, 2], [3, 4, 5, 6]], [[7], [8, 9]], pad_id=PAD)
    assert batch["input_ids"].tolist() == [[1, 2, 7, 0, 0, 0], [3, 4, 5, 6, 8, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]
    assert batch["response_mask"].tolist() == [[0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_pack_empty_prompt_masks_unpredictable_first_token():
    batch = pack_prompt_responses([[]], [[5, 6, 7]], pad_id=PAD)
    assert batch["input_ids"].tolist() == [[5, 6, 7]]
    assert batch["response_mask"].tolist() == [[0, 1, 1]]


def test_pack_truncation_cuts_prompt_from_the_left_first():
    prompts = [[1, 2, 3, 4, 5], [1, 2, 3], [1, 2]]
    responses = [[6, 7, 8], [4, 5, 6, 7, 8, 9, 10], [3, 4]]
    batch = pack_prompt_responses(prompts, responses, pad_id=PAD, max_length=5)
    # row 0: whole response kept, prompt keeps its last 2 tokens
    # row 1: response alone (7) exceeds 5: one prompt token + the first 4 response tokens
    # row 2: fits, untouched and padded
    assert batch["input_ids"].tolist() == [[4, 5, 6, 7, 8], [3, 4, 5, 6, 7], [1, 2, 3, 4, 0]]
    assert batch["response_mask"].tolist() == [[0, 0, 1, 1, 1], [0, 1, 1, 1, 1], [0, 0, 1, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]


def test_pack_length_mismatch_raises():
    with pytest.raises(ValueError):
        pack_prompt_responses([[1]], [[2], [3]], pad_id=PAD)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _manual(model, ids: list[int]) -> torch.Tensor:
    """Reference: one unpadded sequence, full log_softmax, a Python loop over positions."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return torch.tensor([0.0] + [logp[t - 1, ids[t]].item() for t in range(1, len(ids))])


def test_token_logprobs_match_manual_and_ignore_padding(tiny):
    model, tok = tiny
    prompts = [tok.encode("Human: what is the capital of France?"), tok.encode("Please write")]
    responses = [tok.encode(" Paris.") + [tok.eos_token_id], tok.encode(" a short poem about the sea, the sky.")]
    batch = pack_prompt_responses(prompts, responses, pad_id=tok.pad_token_id)
    lengths = batch["attention_mask"].sum(-1).tolist()
    assert lengths[0] != lengths[1]  # the test needs padding in one row
    with torch.no_grad():
        together = token_logprobs(model, batch)
        chunked = token_logprobs(model, batch, chunk_size=1)
    assert together.shape == batch["input_ids"].shape and together.dtype == torch.float32
    for i, (p, r) in enumerate(zip(prompts, responses)):
        n = len(p) + len(r)
        expected = _manual(model, p + r)
        alone = pack_prompt_responses([p], [r], pad_id=tok.pad_token_id)
        with torch.no_grad():
            single = token_logprobs(model, alone)[0]
        assert torch.allclose(single, expected, atol=1e-5)
        assert torch.allclose(together[i, :n], expected, atol=1e-5)  # padding in the batch changes nothing
        assert torch.allclose(chunked[i, :n], expected, atol=1e-5)
        assert torch.all(together[i, n:] == 0)
        assert torch.all(together[i, 1:n] < 0)


def test_token_logprobs_backprop(tiny):
    model, tok = tiny
    batch = pack_prompt_responses([tok.encode("The quick")], [tok.encode(" brown fox")], pad_id=tok.pad_token_id)
    lp = token_logprobs(model, batch)
    (lp * batch["response_mask"]).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)
