"""Both sampler backends, for real, inside Ray actors: k samples with log-probs, and weight updates."""

import pytest
import ray
import torch
from safetensors.torch import load_file

from raylign.models.chat import load_tokenizer
from raylign.sampling.actor import create_samplers
from raylign.sampling.base import SamplingConfig

pytestmark = pytest.mark.integration

PROMPTS = [
    {"prompt_id": "a", "prompt": "what is the capital of France?", "messages": [{"role": "user", "content": "what is the capital of France?"}]},
    {"prompt_id": "b", "prompt": "write a poem", "messages": [{"role": "user", "content": "write a poem"}]},
    {"prompt_id": "c", "prompt": "hello", "messages": [{"role": "user", "content": "hello"}]},
]


def perturbed(model_dir, scale=0.5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    weights = load_file(str(model_dir / "model.safetensors"))
    return {k: v + scale * torch.randn(v.shape, generator=generator) for k, v in weights.items()}


def reference_logprobs(model_dir, prompt_ids, response_ids, weights=None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if weights is not None:
        model.load_state_dict(weights, strict=False)
        model.tie_weights()
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logits = model(ids).logits.float().log_softmax(-1)[0]
    start = len(prompt_ids)
    return [logits[start - 1 + i, tok].item() for i, tok in enumerate(response_ids)]


@pytest.fixture(scope="module", params=["hf", "vllm"])
def sampler(request, ray_cluster, tiny_model_dir):
    config = SamplingConfig(backend=request.param, num_samples=3, max_new_tokens=12, dtype="float32", temperature=1.0)
    group = create_samplers(str(tiny_model_dir), config, count=1)
    yield request.param, group[0]
    group.shutdown()


def test_k_samples_with_logprobs(sampler, tiny_model_dir):
    backend, actor = sampler
    rollouts = ray.get(actor.generate.remote(PROMPTS))
    assert len(rollouts) == len(PROMPTS) * 3
    for prompt in PROMPTS:
        mine = [r for r in rollouts if r["prompt_id"] == prompt["prompt_id"]]
        assert sorted(r["sample_index"] for r in mine) == [0, 1, 2]
    for r in rollouts:
        assert len(r["response_token_ids"]) == len(r["logprobs"]) > 0
        assert all(lp <= 1e-4 for lp in r["logprobs"])
        assert r["policy_version"] == 0
    # The reported log-probs are the model's own: recompute one with plain transformers.
    r = rollouts[0]
    expected = reference_logprobs(tiny_model_dir, r["prompt_token_ids"], r["response_token_ids"])
    assert r["logprobs"] == pytest.approx(expected, abs=2e-3), backend


def test_weight_update_changes_outputs(sampler, tiny_model_dir):
    backend, actor = sampler
    before = ray.get(actor.generate.remote(PROMPTS[:1]))[0]
    import glob

    new_weights = perturbed(tiny_model_dir)
    shm_before = set(glob.glob("/dev/shm/raylign-weights-*"))
    seconds = ray.get(actor.load_state_dict.remote(new_weights, 1))
    assert set(glob.glob("/dev/shm/raylign-weights-*")) <= shm_before, "weights left behind in shared memory"
    assert seconds >= 0
    assert ray.get(actor.policy_version.remote()) == 1
    after = ray.get(actor.generate.remote(PROMPTS[:1]))
    assert all(r["policy_version"] == 1 for r in after)
    new = after[0]
    old_model = reference_logprobs(tiny_model_dir, new["prompt_token_ids"], new["response_token_ids"])
    new_model = reference_logprobs(tiny_model_dir, new["prompt_token_ids"], new["response_token_ids"], new_weights)
    assert new["logprobs"] != pytest.approx(old_model, abs=1e-2), "sampler still uses the old weights"
    assert new["logprobs"] == pytest.approx(new_model, abs=2e-3), "sampler's weights are not the ones sent"
    assert before["policy_version"] == 0


def test_over_long_prompt_rejected_or_truncated(ray_cluster, tiny_model_dir):
    long_prompt = {"prompt_id": "long", "prompt": "word " * 400, "messages": [{"role": "user", "content": "word " * 400}]}
    tokenizer = load_tokenizer(str(tiny_model_dir))
    for mode, expected in (("reject", 0), ("truncate", 1)):
        config = SamplingConfig(backend="hf", num_samples=1, max_new_tokens=4, max_prompt_tokens=32, over_long_prompt=mode)
        group = create_samplers(str(tiny_model_dir), config, count=1)
        rollouts = ray.get(group[0].generate.remote([long_prompt]))
        assert len(rollouts) == expected
        if rollouts:
            assert len(rollouts[0]["prompt_token_ids"]) == 32
            assert tokenizer.decode(rollouts[0]["prompt_token_ids"]).endswith("assistant\n")
        group.shutdown()
