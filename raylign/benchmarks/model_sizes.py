"""Randomly initialised models of the default model's architecture at 0.5B and 1.5B parameters.

Weight sync cost grows with bytes, not with what the weights mean, so the benchmark only
needs the right shapes: SmolLM2's LlamaConfig (vocabulary, tied embeddings, head_dim 64,
which vLLM's CPU attention expects) widened and deepened until it holds about 0.5B or 1.5B
parameters (Qwen2.5-0.5B/1.5B-like widths). Built once in bf16 (3 GB at 1.5B, half of fp32)
into the raylign cache, with the default model's tokenizer so vLLM loads it as is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# Shapes on top of the default model's config; num_hidden_layers is solved for the target count.
SIZES: dict[str, dict] = {
    "0.5b": {"target": 0.5e9, "hidden_size": 1024, "intermediate_size": 2816,
             "num_attention_heads": 16, "num_key_value_heads": 4, "head_dim": 64},
    "1.5b": {"target": 1.5e9, "hidden_size": 1536, "intermediate_size": 8960,
             "num_attention_heads": 24, "num_key_value_heads": 4, "head_dim": 64},
}


def llama_param_count(config: dict) -> int:
    """Parameters of a LlamaForCausalLM described by `config`, counted from shapes alone."""
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2  # q, o; k, v
    if config.get("attention_bias"):
        attention += heads * head_dim + 2 * kv_heads * head_dim + hidden
    mlp = 3 * hidden * inter + (2 * inter + hidden if config.get("mlp_bias") else 0)
    layer = attention + mlp + 2 * hidden  # two RMSNorms
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return embeddings + config["num_hidden_layers"] * layer + hidden  # final norm


def sized_config(base: dict, size: str) -> dict:
    """The default model's config reshaped to `size` ('0.5b', '1.5b'), layer count chosen to hit it."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose from {', '.join(SIZES)}")
    shape = {k: v for k, v in SIZES[size].items() if k != "target"}
    config = {**base, **shape, "num_hidden_layers": 1}
    per_layer = llama_param_count({**config, "num_hidden_layers": 2}) - llama_param_count(config)
    fixed = llama_param_count(config) - per_layer
    config["num_hidden_layers"] = max(1, round((SIZES[size]["target"] - fixed) / per_layer))
    return config


def default_config_dict(model: str = "SmolLM2-135M-Instruct") -> dict:
    from raylign.models.registry import resolve_model

    return json.loads((Path(resolve_model(model)) / "config.json").read_text())


def build_sized_model(size: str, base_model: str = "SmolLM2-135M-Instruct", cache_dir: str | Path | None = None,
                      seed: int = 0) -> Path:
    """Write (once) a random-init `size` model of the base model's architecture; returns its folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from raylign.models.local import cache_root
    from raylign.models.registry import resolve_model

    base_dir = Path(resolve_model(base_model))
    out = Path(cache_dir or cache_root() / "bench_models") / f"{base_dir.name}-random-{size}"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    config_dict = sized_config(default_config_dict(base_model), size)
    config_dict["dtype"] = "bfloat16"
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(config_dict))
    config = AutoConfig.from_pretrained(tmp)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(tmp, safe_serialization=True)
    del model
    for item in base_dir.iterdir():  # tokenizer, chat template, generation config
        if item.is_file() and not item.name.endswith(".safetensors") and item.name not in ("config.json",):
            shutil.copy2(item, tmp / item.name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
