"""ALMoST's filters and rubric against hand-computed values; the raw prompt encoding."""

import pytest

from raylign.feedback.almost_filters import (
    ConfigRank,
    bad_prompt_reason,
    bad_response_reason,
    clean_generated_prompt,
    cut_response,
    dominates,
    fails_length_heuristic,
    is_near_duplicate,
    lcs_length,
    length_stats,
    make_comparisons,
    rank_configs,
    rouge_l,
)


def test_lcs_and_rouge_l_by_hand():
    assert lcs_length("a b c d e".split(), "a c e f".split()) == 3
    assert lcs_length([], ["a"]) == 0
    # candidate 4 tokens, reference 5, LCS "the cat on mat" = 4: P = 1, R = 0.8, F = 2*0.8/1.8
    assert rouge_l("The cat on mat", "the cat sat on mat!") == pytest.approx(2 * 0.8 / 1.8)
    assert rouge_l("How do I bake bread?", "how do i bake bread") == 1.0  # case and punctuation ignored
    assert rouge_l("", "anything") == 0.0
    assert rouge_l("alpha beta", "gamma delta") == 0.0


def test_near_duplicates_at_half():
    seeds = ["How do I create a good business plan?"]
    # tokens: how do i write a good business plan (8) vs how do i create a good business plan (8): LCS 7 -> F = 0.875
    assert is_near_duplicate("How do I write a good business plan", seeds)
    # 8 tokens each, only one of "a" / "good" in common order: LCS 1 -> F = 0.125
    assert not is_near_duplicate("What are good plants for a shady balcony?", seeds)
    # exactly 0.5 counts as a duplicate: "a b c d" vs "a b x y": LCS 2, P = R = 0.5
    assert is_near_duplicate("a b c d", ["a b x y"], threshold=0.5)
    assert not is_near_duplicate("a b c d", ["a x y z"], threshold=0.5)


def test_generated_prompt_cleanup_and_rules():
    assert clean_generated_prompt(' "What is a good name for a cat?"\n10. next one') == "What is a good name for a cat?"
    assert clean_generated_prompt("3. How tall is Everest?") == "How tall is Everest?"
    assert clean_generated_prompt("\n\n") == ""
    assert bad_prompt_reason("Hi there") == "too_short"
    assert bad_prompt_reason("word " * 70) == "too_long"
    assert bad_prompt_reason("Human: tell me a joke please") == "template_leak"
    assert bad_prompt_reason("Can you tell me a joke?") is None


def test_bad_response_rules():
    assert cut_response(" Sure, here it is.\n\nHuman:  thanks\n\nAssistant: ok") == "Sure, here it is."
    assert cut_response("An answer.\n\n-----\n\nHuman: next") == "An answer."
    assert bad_response_reason("Too short answer") == "too_short"
    assert bad_response_reason("Could you tell me more about what you need?") == "ends_with_question_or_colon"
    assert bad_response_reason("Here are the steps you should follow:") == "ends_with_question_or_colon"
    assert bad_response_reason("Fine, I will answer. Human: and then more") == "contains_turn_marker"
    assert bad_response_reason("Paris is the capital of France.") is None


A = ConfigRank("big_faithful_3", size=7, shots=3, quality=2)
B = ConfigRank("big_hhh_3", size=7, shots=3, quality=1)
C = ConfigRank("big_hhh_1", size=7, shots=1, quality=1)
D = ConfigRank("small_faithful_5", size=1, shots=5, quality=2)


def test_rubric_orders_only_what_it_can():
    assert dominates(A, B) and dominates(B, C) and dominates(A, C)
    assert not dominates(B, A) and not dominates(A, A)
    # smaller but more shots: the rubric cannot order it against A, B or C
    assert not any(dominates(D, x) or dominates(x, D) for x in (A, B, C))
    assert [c.name for c in rank_configs([C, D, B, A])] == ["big_faithful_3", "big_hhh_3", "big_hhh_1", "small_faithful_5"]


def test_length_heuristic_by_hand():
    mu, sigma = length_stats(["one two", "one two three four", "a b c d e f"])  # 2, 4, 6 words
    assert (mu, sigma) == pytest.approx((4.0, (8 / 3) ** 0.5))
    # chosen 2 words < rejected 6 and 2 < 4 - 0.816: skipped; chosen 4 < 6 but not short: kept
    assert fails_length_heuristic("one two", "a b c d e f", mu, sigma)
    assert not fails_length_heuristic("one two three four", "a b c d e f", mu, sigma)
    assert not fails_length_heuristic("a b c d e f", "one two", mu, sigma)  # longer chosen always kept


def test_comparisons_walk_the_ranking():
    responses = {
        A.name: "Paris is the capital and largest city of France, on the Seine.",
        B.name: "The capital of France is Paris, a big city.",
        C.name: "Which country do you mean:",  # bad: ends with a colon
        D.name: "It is Paris, the French capital city of course.",
    }
    pairs, stats = make_comparisons(responses, [A, B, C, D])
    assert [(p["chosen_config"], p["rejected_config"]) for p in pairs] == [("big_faithful_3", "big_hhh_3")]
    assert pairs[0]["chosen"] == responses[A.name] and pairs[0]["rejected"] == responses[B.name]
    assert stats == {"bad_ends_with_question_or_colon": 1}
    # B's answer much longer than A's short one: A (chosen) is short for this prompt -> skipped
    responses[A.name] = "Paris, in France."
    responses[B.name] = "The capital of France is Paris, a large and old city on the river Seine with many museums."
    pairs, stats = make_comparisons(responses, [A, B, C, D], min_words=3)
    assert pairs == [] and stats["length_filtered"] == 1
    pairs, _ = make_comparisons(responses, [A, B, C, D], min_words=3, length_heuristic=False)
    assert len(pairs) == 1


def test_raw_prompt_encoding(tiny_model_dir):
    from raylign.models.chat import (
        PromptTooLongError,
        encode_prompt,
        encode_raw_prompt,
        load_tokenizer,
    )

    tokenizer = load_tokenizer(str(tiny_model_dir))
    text = "Human: hi\n\nAssistant:"
    ids = encode_raw_prompt(tokenizer, text, 512)
    assert ids == tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text  # no chat template around it
    assert ids != encode_prompt(tokenizer, [{"role": "user", "content": text}], 512)
    assert encode_raw_prompt(tokenizer, text, 3) == ids[-3:]
    with pytest.raises(PromptTooLongError):
        encode_raw_prompt(tokenizer, text, 3, "reject")


def test_rubric_as_configuration_axes_and_priority():
    from raylign.feedback.almost import RubricConfig

    big_hhh, small_faithful = ConfigRank("big_hhh", 7.0, 3, 1.0), ConfigRank("small_faithful", 1.0, 3, 2.0)
    assert not dominates(big_hhh, small_faithful) and not dominates(small_faithful, big_hhh)  # no order
    size_first = RubricConfig(rule="priority", axes=["size", "quality", "shots"])
    assert dominates(big_hhh, small_faithful, size_first) and not dominates(small_faithful, big_hhh, size_first)
    quality_first = RubricConfig(rule="priority", axes=["quality", "size"])
    assert dominates(small_faithful, big_hhh, quality_first)
    only_size = RubricConfig(axes=["size"])  # dominance over one axis: size alone decides
    assert dominates(big_hhh, small_faithful, only_size)
    assert [c.name for c in rank_configs([small_faithful, big_hhh], size_first)] == ["big_hhh", "small_faithful"]


def test_a_prompt_generator_that_runs_out_of_rounds_says_which_settings_to_raise(monkeypatch, capsys):
    import random

    from raylign.config import load_config
    from raylign.feedback import almost

    answers = iter(["How do I plant tomatoes in a small garden bed this spring?",
                    "What are the main causes of inflation in modern economies?"])
    monkeypatch.setattr(almost, "complete_cached", lambda samplers, texts, *a: (
        [next(answers, "How do I plant tomatoes in a small garden bed this spring?") for _ in texts], [False] * len(texts)))
    config = load_config(almost.AlmostConfig, "jobs/almost_scale.yaml",
                         ["prompts.num_prompts=5", "prompts.max_rounds=2", "prompts.per_round=3"])
    prompts, stats = almost.generate_prompts([], config, random.Random(0))
    assert len(prompts) == 2 and stats["near_duplicate"] == 4 and stats["candidates"] == 6
    assert ("[almost] warning: 2 of prompts.num_prompts=5 after prompts.max_rounds=2 (6 candidates; rejected: "
            "near_duplicate 4); raise prompts.max_rounds, or give prompts.path") in capsys.readouterr().out
