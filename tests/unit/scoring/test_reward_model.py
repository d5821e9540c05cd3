"""Score position = last non-pad token, for left and right padding, in training and inference."""

import pytest
import torch

from raylign.scoring.reward_model import (
    last_token_index,
    load_reward_model,
    pad_batch,
    sequence_scores,
)
from raylign.scoring.text import (
    PairTooLongError,
    encode_scored_pair,
    render_scored_text,
)


def test_last_token_index_right_and_left_padding():
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 4, 0]
    assert last_token_index(left).tolist() == [4, 4, 4]


def test_pad_batch_sides():
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert last_token_index(mask).tolist() == [2, 2]


@pytest.fixture(scope="module")
def tiny_rm(tiny_model_dir):
    torch.manual_seed(0)
    model, tokenizer, _ = load_reward_model(tiny_model_dir)
    return model.eval(), tokenizer


def test_scores_do_not_depend_on_padding_side_or_batch_mates(tiny_rm):
    model, tokenizer = tiny_rm
    seqs = [
        encode_scored_pair(tokenizer, "What is the capital of France?", "Paris.", 128),
        encode_scored_pair(tokenizer, "Write a poem", "The sea, the sky and the wind, a short poem about them all.", 128),
    ]
    assert len(seqs[0]) != len(seqs[1])
    with torch.no_grad():
        alone = [sequence_scores(model, *pad_batch([s], tokenizer.pad_token_id)).item() for s in seqs]
        right = sequence_scores(model, *pad_batch(seqs, tokenizer.pad_token_id, "right")).tolist()
        left = sequence_scores(model, *pad_batch(seqs, tokenizer.pad_token_id, "left")).tolist()
        plain = model(*pad_batch(seqs, tokenizer.pad_token_id, "right")).logits[:, 0].tolist()
    assert right == pytest.approx(alone, abs=1e-5)
    assert left == pytest.approx(alone, abs=1e-5)
    # plain transformers (its own pooling on right padding) reads the same position
    assert plain == pytest.approx(alone, abs=1e-5)


def test_scored_text_is_the_chat_template_with_an_assistant_turn(tiny_rm):
    _, tokenizer = tiny_rm
    text = render_scored_text(tokenizer, [{"role": "user", "content": "Hi"}], "Hello")
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    assert render_scored_text(tokenizer, "Hi", "Hello") == text
    assert render_scored_text(tokenizer, {"prompt": "ignored", "messages": [{"role": "user", "content": "Hi"}]}, "Hello") == text


def test_over_long_pairs_keep_their_end_or_are_dropped(tiny_rm):
    _, tokenizer = tiny_rm
    full = encode_scored_pair(tokenizer, "a long prompt " * 20, "the response", 10_000)
    cut = encode_scored_pair(tokenizer, "a long prompt " * 20, "the response", 16)
    assert len(cut) == 16 and cut == full[-16:]
    with pytest.raises(PairTooLongError, match="max_length=16"):
        encode_scored_pair(tokenizer, "a long prompt " * 20, "the response", 16, over_long="drop")


def test_a_fresh_head_is_the_same_everywhere_and_reported(tiny_model_dir):
    first, _, has_head = load_reward_model(tiny_model_dir)
    second, _, _ = load_reward_model(tiny_model_dir)
    assert not has_head
    assert torch.equal(first.score.weight, second.score.weight)


def test_encoder_backbones_score_the_same_for_both_padding_sides(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from raylign.models.tiny import build_tiny_tokenizer
    from raylign.models.trainable import freeze_to_top_layers

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, pad_token_id=tokenizer.pad_token_id, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tokenizer, _ = load_reward_model(tmp_path)
    model.eval()
    seqs = [encode_scored_pair(tokenizer, "Hi", "Hello there friend", 64), encode_scored_pair(tokenizer, "Hi", "No", 64)]
    with torch.no_grad():
        right = sequence_scores(model, *pad_batch(seqs, tokenizer.pad_token_id, "right")).tolist()
        left = sequence_scores(model, *pad_batch(seqs, tokenizer.pad_token_id, "left")).tolist()
        plain = model(*pad_batch(seqs, tokenizer.pad_token_id, "right")).logits[:, 0].tolist()
    assert left == pytest.approx(right, abs=1e-5) and plain == pytest.approx(right, abs=1e-5)
    names = freeze_to_top_layers(model, 1)
    assert any(n.startswith("classifier.") for n in names) and not any(".layer.0." in n for n in names)


def test_http_reward_source_pickles_into_pipeline_stages():
    """Ray Data ships stage arguments by pickling: an open httpx client cannot travel, the config can."""
    import pickle

    from raylign.scoring.base import RewardConfig
    from raylign.scoring.sources import make_reward_source

    source = make_reward_source(RewardConfig(kind="http", url="http://127.0.0.1:9", token="t", batch_size=3))
    copy = pickle.loads(pickle.dumps(source))
    assert copy.config == source.config and copy.client is not source.client
    copy.close()
    source.close()


def test_missing_eos_penalty_lowers_only_responses_cut_at_the_limit():
    import pickle

    from raylign.scoring.base import RewardConfig
    from raylign.scoring.sources import ShapedReward, make_reward_source

    rows = [{"prompt": "p", "response": "abcd", "finish_reason": "length"},
            {"prompt": "p", "response": "abcd", "finish_reason": "stop"},
            {"prompt": "p", "response": "abcd", "finish_reason": "dataset"},
            {"prompt": "p", "response": "abcd"}]
    config = {"kind": "function", "function": "raylign.feedback.annotators:length_reward"}
    plain = make_reward_source(RewardConfig(**config)).score(rows)
    assert len(set(plain)) == 1
    source = make_reward_source(RewardConfig(**config, missing_eos_penalty=1.5))
    assert isinstance(source, ShapedReward)
    assert pickle.loads(pickle.dumps(source)).score(rows) == [plain[0] - 1.5] + plain[1:]
    assert not isinstance(make_reward_source(RewardConfig(**config)), ShapedReward)
    with pytest.raises(ValueError, match="missing_eos_penalty"):
        RewardConfig(**config, missing_eos_penalty=-1.0)


def test_repetition_penalty_lowers_repeated_responses_by_their_seq_rep_4():
    import pickle

    from raylign.scoring.base import RewardConfig
    from raylign.scoring.sources import ShapedReward, make_reward_source

    # 12 words, the sentence three times: 9 four-grams, 4 unique -> seq-rep-4 5/9
    repeated = "I am so sorry. I am so sorry. I am so sorry."
    varied = "I am sorry, but I cannot help with that request today."
    rows = [{"prompt": "p", "response": repeated, "finish_reason": "length"},
            {"prompt": "p", "response": varied, "finish_reason": "stop"},
            {"prompt": "p", "response": repeated, "finish_reason": "dataset"}]
    config = {"kind": "function", "function": "raylign.feedback.annotators:length_reward"}
    plain = make_reward_source(RewardConfig(**config)).score(rows)
    source = make_reward_source(RewardConfig(**config, repetition_penalty=0.9))
    assert isinstance(source, ShapedReward)
    got = pickle.loads(pickle.dumps(source)).score(rows)
    assert got == pytest.approx([plain[0] - 0.9 * 5 / 9, plain[1], plain[2]])
    both = make_reward_source(RewardConfig(**config, repetition_penalty=0.9, missing_eos_penalty=1.0)).score(rows)
    assert both == pytest.approx([plain[0] - 0.5 - 1.0, plain[1], plain[2]])
    with pytest.raises(ValueError, match="repetition_penalty"):
        RewardConfig(**config, repetition_penalty=-0.1)
