"""`raylign eval policy` on a local Ray cluster with the tiny model: generation by a sampler
actor, reward by a reward-model actor, reference perplexity and DPO implicit-reward accuracy."""

from __future__ import annotations

import json
import math

import pytest
import torch

from raylign.evaluation.policy_eval import implicit_reward_accuracy

pytestmark = pytest.mark.integration

PAIRS = [
    {"prompt": "What is the capital of France?", "chosen": "The capital of France is Paris.", "rejected": "I am sorry."},
    {"prompt": "Write a short poem about the sea.", "chosen": "The sea, the sky and the wind.", "rejected": "No."},
    {"prompt": "Give me a recipe.", "chosen": "Mix flour, water, salt and yeast, then bake.", "rejected": "Dog."},
    {"prompt": "Say something kind.", "chosen": "You are doing great!", "rejected": "The quick brown fox."},
]


def test_implicit_reward_accuracy_counts_ties_as_half():
    # rows alternate chosen, rejected: rewards 0.1*(pi - ref) = [0.2, 0.1], [0.0, 0.0], [-0.1, 0.3]
    report = implicit_reward_accuracy([-1.0, -2.0, -5.0, -5.0, -4.0, -1.0], [-3.0, -3.0, -5.0, -5.0, -3.0, -4.0], 0.1)
    assert report["pairs"] == 3
    assert report["preference_accuracy"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert report["implicit_reward_margin"] == pytest.approx((0.1 + 0.0 - 0.4) / 3)


def _args(**extra):
    from raylign.evaluation.policy_eval import _parser

    argv = []
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return _parser().parse_args(argv)


@pytest.mark.slow
def test_eval_policy_with_the_tiny_model(ray_cluster, tiny_model_dir, tiny_reward_model_dir, tmp_path):
    from raylign.evaluation.policy_eval import evaluate, format_report
    from raylign.models.tiny import build_tiny_model

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    # the policy equals the reference: every implicit reward is 0, so every pair is a tie
    args = _args(model=tiny_model_dir, reference=tiny_model_dir, data=data, split="all", limit=4,
                 reward_model=tiny_reward_model_dir, max_new_tokens=8, max_length=128, batch_size=2)
    report = evaluate(args)
    assert report["prompts"] == 4 and report["pairs"] == 4
    assert report["preference_accuracy"] == 0.5 and report["implicit_reward_margin"] == 0.0
    assert math.isfinite(report["reward_mean"]) and report["reward_std"] >= 0
    assert report["reference_ppl"] > 1.0 and report["response_tokens"] > 0
    assert "preference accuracy" in format_report(report)

    # reference perplexity by hand: the tiny model's NLL of its own greedy responses
    from transformers import AutoModelForCausalLM

    from raylign.models.chat import (
        as_messages,
        encode_prompt,
        encode_response,
        load_tokenizer,
    )

    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    nll, count = 0.0, 0
    for sample in report["samples"]:
        row = next(p for p in PAIRS if p["prompt"] == sample["prompt"])
        prompt = encode_prompt(tokenizer, as_messages(row), 384)
        response = encode_response(tokenizer, sample["response"], 128)
        response = response if sample["stopped"] else response[:-1]  # EOS counts only when generated
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            logprobs = model(ids).logits[0, :-1].float().log_softmax(-1)
        picked = logprobs[torch.arange(len(prompt) - 1, ids.shape[1] - 1), ids[0, len(prompt):]]
        nll -= float(picked.sum())
        count += len(response)
    assert report["response_tokens"] == count
    assert report["reference_nll"] == pytest.approx(nll / count, rel=1e-4)
    assert report["reference_ppl"] == pytest.approx(math.exp(nll / count), rel=1e-4)

    # a different policy: accuracy is computed from real log-probs (no longer all ties)
    other = build_tiny_model(tmp_path / "other", seed=7)
    args = _args(model=other, reference=tiny_model_dir, data=data, split="all", limit=4,
                 reward_function="raylign.scoring.rule_rewards:concise", max_new_tokens=8, max_length=128)
    report = evaluate(args)
    assert report["pairs"] == 4 and report["preference_accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert report["implicit_reward_margin"] != 0.0
    expected = [-abs(len(s["response"].split()) - 30) / 30 for s in report["samples"]]
    assert report["reward_mean"] == pytest.approx(sum(expected) / len(expected))
