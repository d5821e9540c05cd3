"""The annotator pool: seeded assignment, order swapping, ties, training-label noise, cache;
and the pure pieces of the annotators (preference formulas, templates, reply parsing)."""

import math

import pytest

from raylign.data.readers import DataError
from raylign.feedback.annotators import (
    Annotator,
    RewardAnnotator,
    as_pairs,
    preference_from_scores,
)
from raylign.feedback.cache import AnnotationCache
from raylign.feedback.config import parse_spec
from raylign.feedback.judges import HttpJudge, preference_from_logprobs
from raylign.feedback.pool import AnnotatorPool, PoolConfig, add_noise, hard_label
from raylign.feedback.templates import get_template, parse_label
from raylign.scoring.base import RewardConfig

LENGTH = RewardConfig(kind="function", function="raylign.feedback.annotators:length_reward")


def rows(n, ties_every=0):
    out = []
    for i in range(n):
        short, long = f"answer {i}", f"a longer answer number {i}"
        out.append({"instruction": f"instruction {i % 997}", "input": "", "output_1": short,
                    "output_2": short if ties_every and i % ties_every == 0 else long})
    return out


class FirstShown(Annotator):
    """Always prefers whichever output it is shown first (pure position bias); counts calls."""

    def __init__(self, name="first"):
        self.name = name
        self.seen = []

    def fingerprint(self):
        return "first-shown"

    def preferences(self, pairs):
        self.seen.extend(pairs)
        return [1.0] * len(pairs)


def test_same_seed_same_assignment_swaps_and_labels():
    data = rows(400)
    make = lambda seed: AnnotatorPool(  # noqa: E731
        {"a": RewardAnnotator(LENGTH, name="a"), "b": FirstShown("b"), "c": FirstShown("c")},
        PoolConfig(seed=seed, training=True))
    first, again, other = make(7).annotate(data), make(7).annotate(data), make(8).annotate(data)
    keys = ("annotator", "swapped", "preference", "noised")
    assert [tuple(r[k] for k in keys) for r in first] == [tuple(r[k] for k in keys) for r in again]
    assert [r["annotator"] for r in first] != [r["annotator"] for r in other]
    # One annotator per instruction, and every annotator gets a fair share.
    by_instruction = {}
    for r in first:
        by_instruction.setdefault(r["instruction"], set()).add(r["annotator"])
    assert all(len(names) == 1 for names in by_instruction.values())
    shares = [sum(r["annotator"] == n for r in first) / len(first) for n in "abc"]
    assert all(0.2 < s < 0.47 for s in shares), shares
    # Batching does not change anything: the same rows annotated in two halves.
    halves = make(7).annotate(data[:150]) + make(7).annotate(data[150:])
    assert [tuple(r[k] for k in keys) for r in halves] == [tuple(r[k] for k in keys) for r in first]


@pytest.mark.parametrize("p", [0.25, 0.1])
def test_measured_flip_rate_within_one_point_of_p(p):
    data = rows(10_000)
    out = AnnotatorPool([RewardAnnotator(LENGTH, name="len")], PoolConfig(seed=3, training=True, noise=p)).annotate(data)
    assert all(r["preference_clean"] > 1.5 for r in out)  # the longer output_2 wins before noise
    flipped = sum(hard_label(r["preference"]) != hard_label(r["preference_clean"]) for r in out) / len(out)
    replaced = sum(r["noised"] for r in out) / len(out)
    assert abs(flipped - p) <= 0.01, flipped
    assert abs(replaced - 2 * p) <= 0.015, replaced


def test_no_noise_at_evaluation_and_noise_is_a_fair_coin():
    data = rows(2000)
    clean = AnnotatorPool([RewardAnnotator(LENGTH, name="len")], PoolConfig(seed=0)).annotate(data)
    assert all(r["preference"] == r["preference_clean"] and not r["noised"] for r in clean)
    coins = [add_noise(1.0, row, seed=0, p=0.5) for row in data]  # 2p = 1: every label is a coin
    assert all(replaced for _, replaced in coins)
    assert 0.46 < sum(label == 2.0 for label, _ in coins) / len(coins) < 0.54


def test_swapping_is_undone_and_cancels_position_bias():
    judge = FirstShown()
    out = AnnotatorPool([judge], PoolConfig(seed=1)).annotate(rows(1000))
    swapped = [r for r in out if r["swapped"]]
    assert 0.45 < len(swapped) / len(out) < 0.55
    # The judge saw output_2 first on swapped rows, so after swapping back output_2 wins there.
    assert all(r["preference"] == (2.0 if r["swapped"] else 1.0) for r in out)
    seen_first = {p["output_1"] for p in judge.seen}
    assert all((r["output_2"] if r["swapped"] else r["output_1"]) in seen_first for r in out)
    unswapped = AnnotatorPool([FirstShown()], PoolConfig(seed=1, swap_order=False)).annotate(rows(50))
    assert all(r["preference"] == 1.0 and not r["swapped"] for r in unswapped)


def test_identical_outputs_are_ties_without_asking():
    judge = FirstShown()
    out = AnnotatorPool([judge], PoolConfig(seed=0, training=False)).annotate(rows(100, ties_every=4))
    ties = [r for r in out if r["output_1"] == r["output_2"]]
    assert len(ties) == 25 and all(r["preference"] == 1.5 for r in ties)
    assert len(judge.seen) == 75


def test_cache_makes_a_rerun_free(tmp_path):
    data = rows(60)
    judge = FirstShown()
    first = AnnotatorPool([judge], PoolConfig(seed=2), AnnotationCache(tmp_path)).annotate(data)
    assert len(judge.seen) == 60
    again_judge = FirstShown()
    pool = AnnotatorPool([again_judge], PoolConfig(seed=2), AnnotationCache(tmp_path))
    second = pool.annotate(data)
    assert again_judge.seen == [] and pool.stats["cached"] == 60
    assert [r["preference"] for r in first] == [r["preference"] for r in second]
    assert AnnotationCache(tmp_path).count("first-shown") == 60


def test_candidate_lists_expand_into_pairs_and_bad_rows_name_the_field():
    pairs = as_pairs([{"instruction": "x", "output": ["a", "b", "c"]}])
    assert [(p["index_1"], p["index_2"]) for p in pairs] == [(0, 1), (0, 2), (1, 2)]
    with pytest.raises(DataError, match="row 1: field 'output_2'"):
        as_pairs([{"instruction": "x", "output_1": "a", "output_2": "b"}, {"instruction": "y", "output_1": "a"}])
    with pytest.raises(DataError, match="at least 2"):
        as_pairs([{"instruction": "x", "output": ["only"]}])


def test_preference_formulas():
    assert preference_from_scores(0.0, 0.0) == 1.5
    assert preference_from_scores(1.0, 0.0) == pytest.approx(1 + 1 / (1 + math.e))
    assert preference_from_scores(0.0, 500.0) == 2.0
    assert preference_from_logprobs(math.log(0.6), math.log(0.2)) == pytest.approx(1.25)
    assert preference_from_logprobs(-1.0, -math.inf) == 1.0
    assert hard_label(1.4) == 1.0 and hard_label(1.5) == 1.5 and hard_label(1.51) == 2.0


def test_templates_and_label_parsing():
    template = get_template("pairwise")
    pair = {"instruction": "Fill {output_2} in", "input": "x = {input}", "output_1": "{a}", "output_2": "B"}
    text = template.messages(pair)[-1]["content"]
    assert "Fill {output_2} in" in text and "x = {input}" in text and "{a}" in text
    assert "Input" not in get_template("pairwise").messages({**pair, "input": ""})[-1]["content"]
    assert parse_label(" 2", ("1", "2")) == 1 and parse_label("Answer 1.", ("1", "2")) == 0
    assert parse_label("A", ("A", "B")) == 0 and parse_label("a good question", ("A", "B")) is None
    with pytest.raises(ValueError, match="unknown judge template"):
        get_template("nope")


def test_http_judge_reads_label_probabilities_then_text():
    judge = HttpJudge("http://127.0.0.1:1", "m")
    reply = {"choices": [{"message": {"content": "The"}, "logprobs": {"content": [
        {"token": "The", "logprob": -0.1, "top_logprobs": [{"token": "The", "logprob": -0.1}]},
        {"token": " 2", "logprob": -0.4, "top_logprobs": [{"token": " 2", "logprob": math.log(0.3)},
                                                           {"token": "1", "logprob": math.log(0.1)}]}]}}]}
    assert judge.read_preference(reply) == pytest.approx(1.75)
    assert judge.read_preference({"choices": [{"message": {"content": "Answer 1"}}]}) == 1.0
    assert judge.read_preference({"choices": [{"message": {"content": "both"}}]}) == 1.5 and judge.unparsed == 1
    assert judge.url == "http://127.0.0.1:1/v1/chat/completions"


def test_specs():
    assert parse_spec("rm:alpaca-rm-smollm2").reward.model == "alpaca-rm-smollm2"
    spec = parse_spec("http:http://127.0.0.1:8000/v1#tiny@pairwise_ab")
    assert (spec.url, spec.model, spec.template) == ("http://127.0.0.1:8000/v1", "tiny", "pairwise_ab")
    assert parse_spec("judge:SmolLM2-135M-Instruct").template == "pairwise"
    assert parse_spec("judge-hf:SmolLM2-135M-Instruct@pairwise_ab").backend == "hf"
    with pytest.raises(ValueError, match="unknown kind"):
        parse_spec("gpt:4")


def test_reward_annotator_scores_each_output_of_a_candidate_list_once():
    from raylign.scoring.base import RewardSource

    class Counting(RewardSource):
        def __init__(self):
            self.seen = []

        def score(self, rows):
            self.seen += [r["response"] for r in rows]
            return [float(len(r["response"])) for r in rows]

    source = Counting()
    pairs = as_pairs([{"instruction": "q", "input": "", "output": ["a", "bbb", "cc", "dddd"]}])
    prefs = RewardAnnotator(source=source, name="len").preferences(pairs)
    assert len(pairs) == 6 and sorted(source.seen) == ["a", "bbb", "cc", "dddd"]
    assert prefs == [preference_from_scores(len(p["output_1"]), len(p["output_2"])) for p in pairs]
