"""Pairwise annotators on a real local Ray cluster with the tiny model: label log-probs on both
sampler backends, a pool of a reward-model annotator and an LLM judge run as a Ray Data job
(cached), and the agreement report."""

import json
import math

import pytest
import ray
import torch

from raylign.feedback.annotators import RewardAnnotator, preference_from_scores
from raylign.feedback.cache import AnnotationCache
from raylign.feedback.job import annotate_rows
from raylign.feedback.judges import SamplerJudge, judge_sampling
from raylign.feedback.pool import AnnotatorPool, PoolConfig, hard_label
from raylign.models.chat import as_messages, encode_prompt, load_tokenizer
from raylign.sampling.actor import create_samplers
from raylign.scoring.base import RewardConfig

pytestmark = pytest.mark.integration

PAIRS = [
    {"instruction": f"Question {i}: what is {i} plus {i}?", "input": "" if i % 3 else "be brief",
     "output_1": f"It is {2 * i}.", "output_2": "I do not know." if i % 4 else f"It is {2 * i}."}
    for i in range(12)
]


def teacher_forced(model_dir, prompt_ids, label_ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        logp = model(torch.tensor([prompt_ids + label_ids])).logits.float().log_softmax(-1)[0]
    return sum(logp[len(prompt_ids) - 1 + k, t].item() for k, t in enumerate(label_ids))


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_label_logprobs_match_teacher_forcing(ray_cluster, tiny_model_dir, backend):
    rows = [{"messages": [{"role": "user", "content": text}]} for text in ("Which is better, 1 or 2?", "Say A or B")]
    labels = ["1", "2", "A b"]  # a two-token label too
    group = create_samplers(str(tiny_model_dir), judge_sampling(backend=backend, dtype="float32", max_prompt_tokens=200,
                                                                 vllm_max_model_len=256), count=1)
    try:
        got = ray.get(group[0].label_logprobs.remote(rows, labels))
    finally:
        group.shutdown()
    tokenizer = load_tokenizer(str(tiny_model_dir))
    for row, values in zip(rows, got):
        prompt = encode_prompt(tokenizer, as_messages(row), 200)
        for label, value in zip(labels, values):
            ids = tokenizer(label, add_special_tokens=False)["input_ids"]
            assert value == pytest.approx(teacher_forced(tiny_model_dir, prompt, ids), abs=2e-3)
    assert len(tokenizer("A b", add_special_tokens=False)["input_ids"]) >= 2


def test_pool_as_ray_data_job_is_deterministic_and_cached(ray_cluster, tiny_model_dir, tiny_reward_model_dir, tmp_path):
    reward = RewardAnnotator(RewardConfig(kind="actor", model=str(tiny_reward_model_dir), num_cpus=0.25, max_length=128),
                             name="rm")
    judge = SamplerJudge(str(tiny_model_dir), "pairwise", judge_sampling(backend="hf", dtype="float32",
                                                                        num_cpus_per_sampler=0.25), name="judge")
    pool = AnnotatorPool([reward, judge], PoolConfig(seed=5, training=False), AnnotationCache(tmp_path)).prepare()
    try:
        via_ray = annotate_rows(PAIRS, pool, use_ray_data=True, batch_size=4, concurrency=2, num_cpus=0.25)
        assert AnnotationCache(tmp_path).count() == sum(p["output_1"] != p["output_2"] for p in PAIRS)
        in_process = annotate_rows(PAIRS, pool, use_ray_data=False)  # served from the cache
        assert pool.stats["judged"] == 0 and pool.stats["cached"] == AnnotationCache(tmp_path).count()
        uncached = AnnotatorPool(pool.annotators, PoolConfig(seed=5, training=False))
        fresh = annotate_rows(PAIRS, uncached, use_ray_data=False)
    finally:
        pool.close()
    assert [r["instruction"] for r in via_ray] == [p["instruction"] for p in PAIRS]  # input order kept
    for a, b, c in zip(via_ray, in_process, fresh):
        assert (a["annotator"], a["swapped"]) == (b["annotator"], b["swapped"]) == (c["annotator"], c["swapped"])
        assert a["preference"] == b["preference"] == pytest.approx(c["preference"], abs=1e-4)
    assert {r["annotator"] for r in via_ray} == {"rm", "judge"}
    ties = [r for r in via_ray if r["output_1"] == r["output_2"]]
    assert ties and all(r["preference"] == 1.5 for r in ties)
    # The judge's preference is its renormalised probability of label "2" on the pair as shown.
    row = next(r for r in fresh if r["annotator"] == "judge" and r["output_1"] != r["output_2"])
    shown = {**row, "output_1": row["output_2"], "output_2": row["output_1"]} if row["swapped"] else row
    tokenizer = load_tokenizer(str(tiny_model_dir))
    prompt = encode_prompt(tokenizer, judge.template.messages(shown), 2000)
    lp1, lp2 = (teacher_forced(tiny_model_dir, prompt, tokenizer(l, add_special_tokens=False)["input_ids"]) for l in "12")
    expected = 1 + math.exp(lp2) / (math.exp(lp1) + math.exp(lp2))
    assert row["preference"] == pytest.approx(3 - expected if row["swapped"] else expected, abs=1e-3)
    # The reward annotator is Bradley-Terry on the RM's own scores.
    from raylign.feedback.annotators import pair_messages
    from raylign.scoring.reward_model import RewardScorer

    rm_row = next(r for r in fresh if r["annotator"] == "rm" and r["output_1"] != r["output_2"])
    s1, s2 = RewardScorer(tiny_reward_model_dir, max_length=128).score(
        [{"messages": pair_messages(rm_row)}] * 2, [rm_row["output_1"], rm_row["output_2"]])
    assert rm_row["preference"] == pytest.approx(preference_from_scores(s1, s2), abs=1e-4)


def test_annotate_and_eval_judges_commands(ray_cluster, tmp_path, capsys):
    from raylign.cli import main

    data = tmp_path / "pairs.jsonl"
    rows = [{"instruction": f"q{i}", "output_1": "short" if i % 2 else "a much longer answer", "output_2": "medium one",
             "preference": 1.0 if i % 2 == 0 else 2.0 if i % 3 else 1.6} for i in range(40)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "labels.jsonl"
    spec = "fn:raylign.feedback.annotators:length_reward"
    assert main(["annotate", "--data", str(data), "--annotator", spec, "--output", str(out), "--training",
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    labelled = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(labelled) == 40 and all(r["reference_preference"] == rows[i]["preference"] for i, r in enumerate(labelled))
    assert all(hard_label(r["preference_clean"]) == (2.0 if i % 2 else 1.0) for i, r in enumerate(labelled))
    assert main(["eval", "judges", "--annotator", spec, "--data", str(data), "--output", str(tmp_path / "r.json"),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())[0]
    # The longer output wins: it matches the reference on every pair (confident ones are the 1.0 / 2.0 rows).
    assert report["agreement"] == 1.0 and report["confident_pairs"] == 33 and report["swap_consistency"] == 1.0
    assert "confident" in capsys.readouterr().out
